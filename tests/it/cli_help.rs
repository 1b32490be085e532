//! The front door: every option and positional of every command says what it is, every command shows
//! an example, and the usage lines do not ask for what an environment variable supplies.

use clap::CommandFactory;
use keyroll::cli::Cli;

fn walk(cmd: &clap::Command, path: &str, f: &mut dyn FnMut(&str, &clap::Command)) {
    f(path, cmd);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        walk(sub, &format!("{path} {}", sub.get_name()), f);
    }
}

#[test]
fn every_argument_has_help_text() {
    let mut missing = Vec::new();
    walk(&Cli::command(), "keyroll", &mut |path, cmd| {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                missing.push(format!("{path}: {id}"));
            }
        }
        if cmd.get_about().is_none() {
            missing.push(format!("{path}: the command itself"));
        }
    });
    assert!(missing.is_empty(), "arguments without help text:\n{}", missing.join("\n"));
}

#[test]
fn every_command_shows_an_example() {
    let mut missing = Vec::new();
    walk(&Cli::command(), "keyroll", &mut |path, cmd| {
        if !cmd.get_after_help().is_some_and(|h| h.to_string().contains("Example")) {
            missing.push(path.to_string());
        }
    });
    assert!(missing.is_empty(), "commands whose help shows no example:\n{}", missing.join("\n"));
}

#[test]
fn usage_lines_do_not_require_environment_supplied_options() {
    let mut bad = Vec::new();
    walk(&Cli::command(), "keyroll", &mut |path, cmd| {
        let usage = cmd.clone().render_usage().to_string();
        if usage.contains("--db") || usage.contains("--identity") {
            bad.push(format!("{path}: {usage}"));
        }
        for arg in cmd.get_arguments() {
            if arg.get_env().is_some() && arg.is_required_set() {
                bad.push(format!("{path}: {} is required although an environment variable supplies it", arg.get_id()));
            }
        }
    });
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_card_summary_names_show_and_serve() {
    let cmd = Cli::command();
    let card = cmd.find_subcommand("card").expect("card command");
    let about = card.get_about().expect("about").to_string();
    assert!(about.contains("show") && about.contains("serve"), "{about}");
}

#[test]
fn clap_definitions_are_consistent() {
    Cli::command().debug_assert();
}
