//! `gotalk-demo serve`: the demo on `gotalk serve`'s defaults, at http://127.0.0.1:1234/.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    gotalk_cli::main(|args: DemoArgs| async move {
        let relay = args.serve.relay()?;
        let handlers = gotalk_demo::handlers(&args.demo, &relay, None);
        gotalk_cli::serve::run_with(args.serve, relay, handlers, Some(gotalk_demo::site())).await
    })
}

/// `serve`'s flags and the chat's.
#[derive(clap::Args, Debug)]
struct DemoArgs {
    #[command(flatten)]
    serve: gotalk_cli::serve::Args,
    #[command(flatten)]
    demo: gotalk_demo::Args,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_chat_and_serve_flags_do_not_clash() {
        gotalk_cli::command::<super::DemoArgs>().debug_assert();
    }
}
