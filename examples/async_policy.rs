//! A custom policy that answers after an await — as a call to a policy
//! service would — served by the smol driver.
//!
//! ```sh
//! cargo run --example async_policy            # listens on 127.0.0.1:1884
//! mosquitto_pub -p 1884 -u sensor-1 -P demo -t sensors/sensor-1/t -m 21.5
//! ```
//!
//! Any user name is accepted with the password `demo`; a client may publish
//! and subscribe under `sensors/<its user name>/#`, and subscribe to
//! `sensors/#` when its user name starts with `dashboard`.

use std::sync::Arc;

use testament::broker::{Broker, BrokerConfig};
use testament::driver::{self, DriverConfig};

#[path = "shared/slow_policy.rs"]
mod slow_policy;
use slow_policy::SlowPolicy;

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let listener = std::net::TcpListener::bind("127.0.0.1:1884")?;
    listener.set_nonblocking(true)?;
    let listener = smol::net::TcpListener::try_from(listener)?;
    // Keep the sender: a real program sends `Control::Shutdown` on it for a
    // graceful stop (here Ctrl-C simply ends the process).
    let (_control, stop) = smol::channel::unbounded();
    smol::block_on(driver::smol::serve(
        vec![driver::smol::Listener::plain(listener)],
        Broker::new(BrokerConfig::default()),
        Arc::new(SlowPolicy),
        DriverConfig::default(),
        None,
        stop,
    ))
}
