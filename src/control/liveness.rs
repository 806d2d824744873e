//! Heartbeats and liveness, protocol 1.4.5 (PROTOCOL.md §5), as a pure
//! state machine: the control task feeds it and acts on what it says.

use std::time::Duration;

use crate::error::{code, Error, ErrorKind, Result};
use crate::proto::{ControlChannelLiveness, Heartbeat};

/// The largest liveness timeout an engine may announce.
const MAX_TIMEOUT_MS: u32 = 900_000;

/// The negotiated heartbeat mode of one control channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The client proposed no liveness: no heartbeats either way.
    Disabled,
    /// An older engine: empty heartbeats, no timeout.
    Legacy { interval: Duration },
    /// 1.4.5 liveness: numbered heartbeats, acknowledgements, a timeout.
    Negotiated {
        interval: Duration,
        timeout: Duration,
    },
}

#[derive(Debug)]
pub(crate) struct Liveness {
    mode: Mode,
    last_sequence: u64,
    last_ack: u64,
}

impl Liveness {
    /// Checks the engine's answer against the client's proposal.
    pub(crate) fn negotiate(
        proposed_ms: Option<u32>,
        answered: Option<ControlChannelLiveness>,
    ) -> Result<Liveness> {
        let mode = match (proposed_ms, answered) {
            (None, None) => Mode::Disabled,
            (None, Some(_)) => {
                return Err(Error::protocol(
                    "engine sent liveness although the client proposed none",
                ))
            }
            (Some(ms), None) => Mode::Legacy {
                interval: Duration::from_millis(ms.into()),
            },
            (Some(ms), Some(l)) => {
                if l.heartbeat_interval_ms != ms {
                    return Err(Error::protocol(format!(
                        "engine changed the heartbeat interval ({} ms, proposed {ms} ms)",
                        l.heartbeat_interval_ms
                    )));
                }
                if l.heartbeat_timeout_ms < ms || l.heartbeat_timeout_ms > MAX_TIMEOUT_MS {
                    return Err(Error::protocol(format!(
                        "engine liveness timeout {} ms is outside {ms}..={MAX_TIMEOUT_MS} ms",
                        l.heartbeat_timeout_ms
                    )));
                }
                Mode::Negotiated {
                    interval: Duration::from_millis(ms.into()),
                    timeout: Duration::from_millis(l.heartbeat_timeout_ms.into()),
                }
            }
        };
        Ok(Liveness {
            mode,
            last_sequence: 0,
            last_ack: 0,
        })
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// How often to send heartbeats, if at all.
    pub(crate) fn interval(&self) -> Option<Duration> {
        match self.mode {
            Mode::Disabled => None,
            Mode::Legacy { interval } | Mode::Negotiated { interval, .. } => Some(interval),
        }
    }

    /// How long the engine may stay silent, if enforced.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        match self.mode {
            Mode::Negotiated { timeout, .. } => Some(timeout),
            _ => None,
        }
    }

    /// Whether the engine has shown that it processes our frames: an
    /// acknowledgement in negotiated mode; always true in the other modes.
    pub(crate) fn confirmed(&self) -> bool {
        match self.mode {
            Mode::Negotiated { .. } => self.last_ack > 0,
            Mode::Disabled | Mode::Legacy { .. } => true,
        }
    }

    /// The next heartbeat to send.
    pub(crate) fn next_heartbeat(&mut self) -> Option<Heartbeat> {
        match self.mode {
            Mode::Disabled => None,
            Mode::Legacy { .. } => Some(Heartbeat::default()),
            Mode::Negotiated { .. } => {
                self.last_sequence += 1;
                Some(Heartbeat {
                    sequence: self.last_sequence,
                    acknowledgement: 0,
                })
            }
        }
    }

    /// Applies a heartbeat received from the engine.
    pub(crate) fn on_heartbeat(&mut self, hb: Heartbeat) -> Result<()> {
        match self.mode {
            Mode::Disabled => Err(Error::protocol(
                "engine sent a heartbeat although heartbeats are disabled",
            )),
            Mode::Legacy { .. } => {
                if hb.sequence != 0 || hb.acknowledgement != 0 {
                    Err(Error::protocol("non-empty heartbeat from a legacy engine"))
                } else {
                    Ok(())
                }
            }
            Mode::Negotiated { .. } => {
                if hb.sequence != 0 {
                    return Err(Error::protocol("engine heartbeat carries a sequence"));
                }
                if hb.acknowledgement == 0 {
                    return Err(Error::protocol("engine heartbeat acknowledges nothing"));
                }
                if hb.acknowledgement <= self.last_ack {
                    return Err(Error::protocol(format!(
                        "engine acknowledgement {} is not after {}",
                        hb.acknowledgement, self.last_ack
                    )));
                }
                if hb.acknowledgement > self.last_sequence {
                    return Err(Error::protocol(format!(
                        "engine acknowledged {} but only {} heartbeats were sent",
                        hb.acknowledgement, self.last_sequence
                    )));
                }
                self.last_ack = hb.acknowledgement;
                Ok(())
            }
        }
    }
}

/// The error of a control channel whose engine went silent.
pub(crate) fn expired(timeout: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        code::CONTROL_LIVENESS,
        format!("no frame from the engine for {timeout:?}: control channel is dead"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(interval: u32, timeout: u32) -> Option<ControlChannelLiveness> {
        Some(ControlChannelLiveness {
            heartbeat_interval_ms: interval,
            heartbeat_timeout_ms: timeout,
        })
    }

    fn ack(n: u64) -> Heartbeat {
        Heartbeat {
            sequence: 0,
            acknowledgement: n,
        }
    }

    #[test]
    fn negotiation_rules() {
        assert_eq!(
            Liveness::negotiate(None, None).unwrap().mode(),
            Mode::Disabled
        );
        assert!(Liveness::negotiate(None, l(5000, 15000)).is_err());
        assert!(matches!(
            Liveness::negotiate(Some(5000), None).unwrap().mode(),
            Mode::Legacy { .. }
        ));
        assert!(Liveness::negotiate(Some(5000), l(5000, 5000)).is_ok());
        assert!(Liveness::negotiate(Some(5000), l(5000, 900_000)).is_ok());
        assert!(Liveness::negotiate(Some(5000), l(5000, 900_001)).is_err());
        assert!(Liveness::negotiate(Some(5000), l(5000, 4999)).is_err());
        assert!(Liveness::negotiate(Some(5000), l(4000, 15000)).is_err());
    }

    #[test]
    fn acknowledgements() {
        let mut lv = Liveness::negotiate(Some(1000), l(1000, 3000)).unwrap();
        // Nothing sent yet: any ack is from the future.
        assert!(lv.on_heartbeat(ack(1)).is_err());
        for _ in 0..3 {
            lv.next_heartbeat();
        }
        assert!(lv.on_heartbeat(ack(2)).is_ok()); // skipping 1 is fine
        assert!(lv.on_heartbeat(ack(2)).is_err()); // replay
        let mut lv2 = Liveness::negotiate(Some(1000), l(1000, 3000)).unwrap();
        lv2.next_heartbeat();
        assert!(lv2.on_heartbeat(ack(0)).is_err());
        assert!(lv2
            .on_heartbeat(Heartbeat {
                sequence: 1,
                acknowledgement: 1
            })
            .is_err());
        assert!(lv2.on_heartbeat(ack(1)).is_ok());
        assert!(lv2.on_heartbeat(ack(2)).is_err()); // future
    }

    #[test]
    fn sequences_count_up() {
        let mut lv = Liveness::negotiate(Some(1000), l(1000, 3000)).unwrap();
        let seqs: Vec<u64> = (0..3)
            .map(|_| lv.next_heartbeat().unwrap().sequence)
            .collect();
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn legacy_and_disabled() {
        let mut lv = Liveness::negotiate(Some(1000), None).unwrap();
        assert_eq!(lv.next_heartbeat(), Some(Heartbeat::default()));
        assert!(lv.on_heartbeat(Heartbeat::default()).is_ok());
        assert!(lv.on_heartbeat(ack(1)).is_err());
        assert_eq!(lv.timeout(), None);
        let mut off = Liveness::negotiate(None, None).unwrap();
        assert_eq!(off.next_heartbeat(), None);
        assert!(off.on_heartbeat(Heartbeat::default()).is_err());
    }
}
