//! keyroll's binary: everything happens in [`keyroll::cli::main`]; this only sets up the process and
//! exits with the status it returns (0, 1 check failed, 2 bad input, 70 internal fault).

fn main() {
    // Output piped into `head` and closed early: end quietly like other command-line tools.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(keyroll::cli::main(std::env::args_os()));
}
