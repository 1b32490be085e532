//! `keyroll completions SHELL` (clap_complete) and `keyroll man --out-dir DIR` (clap_mangen).

use super::output::Context;
use super::{Cli, CliError};
use clap::{Args, CommandFactory, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  keyroll completions bash > ~/.local/share/bash-completion/completions/keyroll\n  \
                        keyroll completions zsh > ~/.zfunc/_keyroll\n  \
                        keyroll completions fish > ~/.config/fish/completions/keyroll.fish"
)]
pub struct CompletionsArgs {
    /// The shell to complete keyroll's commands and options in.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  keyroll man --out-dir man && man -l man/keyroll.1")]
pub struct ManArgs {
    /// Where to write keyroll.1 and keyroll-COMMAND.1 pages (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

pub fn completions(ctx: &Context, a: CompletionsArgs) -> Result<(), CliError> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    match a.shell {
        Shell::Bash => clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "keyroll", &mut out),
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "keyroll", &mut out),
        Shell::Fish => clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "keyroll", &mut out),
    }
    let script = String::from_utf8(out).map_err(|e| CliError::internal(format!("completion script: {e}")))?;
    if ctx.json {
        let shell = format!("{:?}", a.shell).to_lowercase();
        super::output::json(&serde_json::json!({ "shell": shell, "script": script }));
    } else {
        print!("{script}");
    }
    Ok(())
}

pub fn man(ctx: &Context, a: ManArgs) -> Result<(), CliError> {
    std::fs::create_dir_all(&a.out_dir).map_err(|e| {
        CliError::input(format!("cannot create {}: {e}", a.out_dir.display()), "pass a writable --out-dir")
    })?;
    let mut written = Vec::new();
    write_pages(&Cli::command(), "keyroll", &a.out_dir, &mut written)?;
    if ctx.json {
        super::output::json(&serde_json::json!({ "out_dir": a.out_dir, "pages": written }));
    } else {
        println!("wrote {} manual page(s) to {}", written.len(), a.out_dir.display());
    }
    Ok(())
}

/// One page per command, named after its path (`keyroll-key-new.1`), as git's pages are.
fn write_pages(cmd: &clap::Command, name: &str, dir: &Path, written: &mut Vec<String>) -> Result<(), CliError> {
    let cmd = cmd.clone().name(name.to_string()).bin_name(name.replace('-', " "));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| CliError::internal(format!("rendering the manual page of {name}: {e}")))?;
    let file = format!("{name}.1");
    let path = dir.join(&file);
    std::fs::write(&path, page)
        .map_err(|e| CliError::input(format!("cannot write {}: {e}", path.display()), "pass a writable --out-dir"))?;
    written.push(file);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
