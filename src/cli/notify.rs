//! The readiness protocol of `start -d`, both sides: the detached child writes
//! `ready`, `waiting: <why>` and `failed: <why>` lines on a pipe (its stdout), and the
//! parent reads them to know when to return and with what.

use std::io::Write;

use crate::dispatch::Readiness;

/// The variable `start -d` sets for its child.
pub const VAR: &str = "DELAYQS_NOTIFY_PARENT";

/// One line from the child.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Ready,
    Waiting(String),
    Failed(String),
    /// Anything else: ignored.
    Other,
}

impl Line {
    pub fn parse(line: &str) -> Line {
        if line == "ready" {
            Line::Ready
        } else if let Some(why) = line.strip_prefix("waiting: ") {
            Line::Waiting(why.into())
        } else if let Some(why) = line.strip_prefix("failed: ") {
            Line::Failed(why.into())
        } else {
            Line::Other
        }
    }
}

/// The child's side: says nothing unless the parent asked for it.
#[derive(Clone, Copy)]
pub struct Notify(bool);

impl Notify {
    pub fn from_env() -> Notify {
        Notify(std::env::var_os(VAR).is_some())
    }

    fn say(&self, line: &str) {
        if self.0 {
            // The parent may have given up and gone; nothing to do about that here.
            let _ = writeln!(std::io::stdout(), "{}", line.replace('\n', " "));
        }
    }

    pub fn failed(&self, why: &str) {
        self.say(&format!("failed: {why}"));
    }

    pub fn into_readiness(self) -> Option<Box<dyn FnMut(Readiness)>> {
        self.0.then(|| {
            Box::new(move |r: Readiness| match r {
                Readiness::Ready => self.say("ready"),
                Readiness::Waiting(why) => self.say(&format!("waiting: {why}")),
            }) as Box<dyn FnMut(Readiness)>
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        assert_eq!(Line::parse("ready"), Line::Ready);
        assert_eq!(
            Line::parse("waiting: Redis at x failed"),
            Line::Waiting("Redis at x failed".into())
        );
        assert_eq!(Line::parse("failed: no"), Line::Failed("no".into()));
        assert_eq!(Line::parse("readyish"), Line::Other);
    }
}
