//! keyroll's binary: parse, run, print the error (and its hint) on stderr, exit with its code.

use clap::Parser;

fn main() {
    // Output piped into `head` and closed early: end quietly like other command-line tools.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = keyroll::cli::Cli::parse();
    let json = cli.json;
    if let Err(e) = keyroll::cli::run(cli) {
        if json {
            let doc =
                serde_json::json!({ "schema": "keyroll/1", "error": { "code": e.code(), "message": e.to_string() } });
            eprintln!("{doc}");
        } else {
            eprintln!("keyroll: {e}");
        }
        std::process::exit(e.exit_code());
    }
}
