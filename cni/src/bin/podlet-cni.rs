//! `podlet-cni`: the CNI 1.1 bridge plugin executable. Reads `CNI_*` and the network config
//! on stdin, prints the result (or the spec's error document) on stdout.

use std::io::Read;
use std::process::ExitCode;

use podlet_cni::plugin::{self, Invocation};

fn main() -> ExitCode {
    // Started by DEL to destroy a retired veth pair off the caller's critical path.
    if let Ok(name) = std::env::var(plugin::REAP_ENV) {
        return match podlet_cni::link::destroy_tombstone(&name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::from(1),
        };
    }
    let result = Invocation::from_env(|k| std::env::var(k).ok()).and_then(|inv| {
        let mut stdin = Vec::new();
        if inv.command != "VERSION" {
            std::io::stdin().read_to_end(&mut stdin).map_err(|e| {
                podlet_cni::error::CniError::new(
                    podlet_cni::error::ErrorCode::IoFailure,
                    "cannot read the network config",
                    e.to_string(),
                )
            })?;
        }
        plugin::run(&inv, &stdin)
    });
    match result {
        Ok(Some(v)) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", e.to_json());
            ExitCode::from(1)
        }
    }
}
