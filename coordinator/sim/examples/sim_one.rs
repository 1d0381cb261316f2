//! Runs one simulator seed verbosely: `cargo run --example sim_one -- SEED`.
//! `MIX=pause` uses the pause-heavy mix; `WEIGHTS=a,b,c,d,e,f,g,h` overrides
//! the fault weights; with `--features canary`, `PAXLOCK_CANARY=persist|
//! ballot|lease` switches one rule off.
use paxlock_sim::{run_seed, SimConfig};

fn main() {
    let seed = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut cfg = if std::env::var("MIX").as_deref() == Ok("pause") {
        SimConfig::pause_heavy()
    } else {
        SimConfig::default()
    };
    cfg.verbose = true;
    if let Ok(w) = std::env::var("WEIGHTS") {
        let mut a = [0u64; 8];
        for (i, v) in w
            .split(',')
            .filter_map(|x| x.parse().ok())
            .take(8)
            .enumerate()
        {
            a[i] = v;
        }
        cfg.fault_weights = Some(a);
    }
    #[cfg(feature = "canary")]
    {
        cfg.canary = match std::env::var("PAXLOCK_CANARY").as_deref() {
            Ok("persist") => paxlock_core::paxos::Canary::NoPersistBeforeReply,
            Ok("ballot") => paxlock_core::paxos::Canary::NoBallotCheckInAccept,
            Ok("lease") => paxlock_core::paxos::Canary::NoLeaseWaitBeforePromise,
            _ => paxlock_core::paxos::Canary::None,
        };
    }
    match run_seed(seed, &cfg) {
        Ok(r) => println!("{r:?}"),
        Err(v) => println!("{}", v.repro_line("sim_paxos")),
    }
}
