//! The e2e server: `gotalk serve` with the demo and the fixture operations on one registry.

use gotalk::relay::Relay;
use gotalk::{Connections, Handlers};

/// `gotalk-e2e serve`'s own flags, besides `gotalk serve`'s.
#[derive(clap::Args, Debug)]
pub struct E2eArgs {
    #[command(flatten)]
    serve: gotalk_cli::serve::Args,
    #[command(flatten)]
    demo: gotalk_demo::Args,
}

/// The demo's registry, its chat in `relay`'s groups, with the fixtures added; every
/// connection is in the one `broadcast` reaches.
pub fn handlers(demo: &gotalk_demo::Args, relay: &Relay) -> Handlers {
    let everyone = Connections::default();
    let mut handlers = gotalk_demo::handlers(demo, relay, Some(everyone.clone()));
    crate::fixtures::register(&mut handlers, everyone);
    handlers
}

/// Runs `gotalk-e2e`: the `gotalk` command whose `serve` serves [`handlers`] and the demo page.
pub fn main() -> std::process::ExitCode {
    gotalk_cli::main(|args: E2eArgs| async move {
        let relay = args.serve.relay()?;
        let handlers = handlers(&args.demo, &relay);
        gotalk_cli::serve::run_with(args.serve, relay, handlers, Some(gotalk_demo::site())).await
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_and_serve_flags_do_not_clash() {
        gotalk_cli::command::<super::E2eArgs>().debug_assert();
    }
}
