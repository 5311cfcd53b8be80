//! The integers that name things across control and data, each its own
//! type so one cannot be passed for another: a listener's stable id and
//! its position in a snapshot are both `u16` underneath, and a config port
//! index is not a DPDK port id.
//!
//! All are `Copy` and `#[repr(transparent)]`, so a struct holding one has
//! the layout it had with the bare integer.

use std::fmt;

macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(transparent)]
        pub struct $name(pub $inner);

        impl From<$name> for usize {
            #[inline]
            fn from(v: $name) -> usize {
                v.0 as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

index_type!(
    /// A listener's stable id: kept across snapshots while the listener
    /// (by name) exists; indexes per-listener counters, lives in sessions.
    ListenerId(u16)
);
index_type!(
    /// A listener's position in one snapshot's `listeners`; changes with
    /// every configuration change.
    ListenerPos(u16)
);
index_type!(
    /// A backend's stable id (by listener, address and port); indexes
    /// per-backend counters, lives in sessions.
    BackendId(u32)
);
index_type!(
    /// A port's position in the configuration's `ports` (not a DPDK port
    /// id).
    PortIndex(u16)
);
