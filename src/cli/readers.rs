//! `keyroll readers`: PC/SC readers and whether a card is in each.

use super::CliError;
use super::output::{self, Context};

#[cfg(feature = "pcsc")]
pub fn run(ctx: &Context) -> Result<(), CliError> {
    let readers = crate::transport::pcsc::list_readers()
        .map_err(|e| CliError::input(e.to_string(), "start pcscd (and vpcd for virtual cards); see README"))?;
    if ctx.json {
        output::json(&serde_json::json!({ "readers": readers }));
    } else if readers.is_empty() {
        println!("no readers");
    } else {
        for r in readers {
            println!("{}  {}", if r.card_present { "card   " } else { "empty  " }, r.name);
        }
    }
    Ok(())
}

#[cfg(not(feature = "pcsc"))]
pub fn run(ctx: &Context) -> Result<(), CliError> {
    let _ = (ctx, output::SCHEMA);
    Err(CliError::input("this keyroll was built without PC/SC", "build with `--features pcsc`"))
}
