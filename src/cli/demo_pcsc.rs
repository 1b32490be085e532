//! `demo --pcsc`: the demo's settlements over real PC/SC. Each settlement serves the two card files as
//! virtual cards on the vpcd readers of a running pcscd (`Virtual PCD 00 00` on port 35963 and
//! `Virtual PCD 00 01` on 35964, Debian's reader file), runs the terminal over `PcscChannel`s, and
//! pulls both cards again.

use super::CliError;
use crate::terminal::{SettleOptions, SettlementReport};
use std::path::Path;

/// The two vpcd readers the demo uses, with their ports.
#[cfg_attr(not(feature = "pcsc"), allow(dead_code))]
pub const READERS: [(&str, &str); 2] =
    [("Virtual PCD 00 00", "127.0.0.1:35963"), ("Virtual PCD 00 01", "127.0.0.1:35964")];

#[cfg(not(feature = "pcsc"))]
pub fn check() -> Result<(), CliError> {
    Err(CliError::input("demo --pcsc needs a keyroll built with PC/SC", "build with `--features pcsc`"))
}

#[cfg(not(feature = "pcsc"))]
pub fn settle(_a: &Path, _b: &Path, _amount: u64, _opts: &SettleOptions) -> Result<SettlementReport, CliError> {
    check().map(|_| unreachable!())
}

/// pcscd must run with both vpcd readers and no card in them.
#[cfg(feature = "pcsc")]
pub fn check() -> Result<(), CliError> {
    let readers = crate::transport::pcsc::list_readers().map_err(|e| {
        CliError::input(
            format!("PC/SC is not available: {e}"),
            "start pcscd (e.g. `pcscd --foreground &`) with vsmartcard-vpcd installed",
        )
    })?;
    for (name, _) in READERS {
        match readers.iter().find(|r| r.name == name) {
            None => {
                return Err(CliError::input(
                    format!("reader {name:?} not found"),
                    "install vsmartcard-vpcd and restart pcscd; `keyroll readers` lists what pcscd sees",
                ));
            }
            Some(r) if r.card_present => {
                return Err(CliError::input(
                    format!("reader {name:?} already has a card"),
                    "stop the other `keyroll card serve`",
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(feature = "pcsc")]
pub fn settle(a: &Path, b: &Path, amount: u64, opts: &SettleOptions) -> Result<SettlementReport, CliError> {
    use crate::domain::Amount;
    use crate::transport::pcsc::{self, PcscChannel};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for (path, (_, addr)) in [a, b].into_iter().zip(READERS) {
        let mut card = super::card::open_card_file(path)?;
        let stop = Arc::clone(&stop);
        servers.push(std::thread::spawn(move || {
            let _ = crate::transport::vpcd::serve(&mut card, addr, &stop, |_| {});
        }));
    }
    let wait = Some(Duration::from_secs(10));
    let no_card = |e| CliError::input(format!("the served card did not appear: {e}"), "check pcscd and vpcd");
    let channels = PcscChannel::wait_and_connect(READERS[0].0, wait)
        .and_then(|a| PcscChannel::wait_and_connect(READERS[1].0, wait).map(|b| (a, b)));
    let result = match channels {
        Err(e) => Err(no_card(e)),
        Ok((mut ca, mut cb)) => {
            let r = crate::terminal::settle(&mut ca, &mut cb, Amount(amount), opts).map_err(CliError::from);
            // Release both cards without a reset, whatever happened, before they leave: pcscd keeps a
            // card that was reset on its way out hidden from the next one in the same reader.
            let _ = ca.disconnect();
            let _ = cb.disconnect();
            r
        }
    };
    stop.store(true, Ordering::SeqCst);
    for s in servers {
        let _ = s.join();
    }
    // Let pcscd's presence poll see both readers empty before the next cards arrive.
    for (name, _) in READERS {
        let _ = pcsc::wait_for_card_removal(name, Some(Duration::from_secs(5)));
    }
    std::thread::sleep(Duration::from_millis(450));
    result
}
