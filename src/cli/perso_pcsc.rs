//! `keyroll perso --reader`: the personalisation line over PC/SC (feature `pcsc`).

use super::CliError;
use super::output::Context;
use crate::authority::Unlocked;

#[cfg(not(feature = "pcsc"))]
pub fn to_reader(_ctx: &Context, _u: &Unlocked<'_>, _batch: &str, reader: &str, _count: u32) -> Result<(), CliError> {
    Err(CliError::input(
        format!("cannot use reader {reader:?}: this keyroll was built without PC/SC"),
        "build with `--features pcsc`, or use --out-dir for card files",
    ))
}

#[cfg(feature = "pcsc")]
pub fn to_reader(_ctx: &Context, _u: &Unlocked<'_>, _batch: &str, reader: &str, _count: u32) -> Result<(), CliError> {
    Err(CliError::input(format!("reader {reader:?}: PC/SC personalisation is not wired yet"), "use --out-dir"))
}
