//! `#[serde(with = "paxlock::humantime_serde")]`: durations in config
//! files written the way people write them (`"150ms"`, `"10s"`, `"1m 30s"`).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a humantime string; the error says what a valid value looks like.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration ({e}); write e.g. \"150ms\" or \"10s\""
        ))
    })
}
