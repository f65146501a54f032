//! What a Byzantine peer does differently.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Sends two different events for every round, each to half the peers.
    Equivocate,
    /// Sends its events to only a third of the peers (others must fetch them).
    Withhold,
    /// Stops for good at some round.
    Crash,
    /// Sends everything late.
    Delay,
    /// Byzantine peer i takes behaviour i mod 4 of the four above.
    Mixed,
}

impl Behavior {
    /// Every behaviour, for sweeps.
    pub const ALL: [Behavior; 5] = [
        Behavior::Equivocate,
        Behavior::Withhold,
        Behavior::Crash,
        Behavior::Delay,
        Behavior::Mixed,
    ];

    /// The concrete behaviour of the `i`-th Byzantine peer.
    pub fn of(self, i: usize) -> Behavior {
        match self {
            Behavior::Mixed => Behavior::ALL[i % 4],
            b => b,
        }
    }
}

impl FromStr for Behavior {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "equivocate" => Behavior::Equivocate,
            "withhold" => Behavior::Withhold,
            "crash" => Behavior::Crash,
            "delay" => Behavior::Delay,
            "mixed" => Behavior::Mixed,
            _ => {
                return Err(format!(
                    "unknown behaviour {s:?} (equivocate|withhold|crash|delay|mixed)"
                ))
            }
        })
    }
}

impl fmt::Display for Behavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Behavior::Equivocate => "equivocate",
            Behavior::Withhold => "withhold",
            Behavior::Crash => "crash",
            Behavior::Delay => "delay",
            Behavior::Mixed => "mixed",
        };
        f.write_str(s)
    }
}
