//! Deterministic simulation support: checkers the simulator and the chaos
//! runner share.

pub mod linearizability;
