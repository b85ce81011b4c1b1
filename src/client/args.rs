//! Command-line pieces every client tool shares (`tern load`, `probe`, `stun`): how it
//! authenticates, and the transport flag.

use clap::Args;

use crate::core::Transport;

/// How a client tool authenticates: a static user, or TURN REST credentials minted
/// from the shared secret (user id: the tool's name).
#[derive(Debug, Clone, Args)]
pub struct CredentialArgs {
    /// Static user name (with --pass).
    #[arg(
        long,
        value_name = "NAME",
        requires = "pass",
        conflicts_with = "secret"
    )]
    pub user: Option<String>,
    /// Password of --user.
    #[arg(long, value_name = "PASSWORD", requires = "user")]
    pub pass: Option<String>,
    /// TURN REST API shared secret.
    #[arg(long)]
    pub secret: Option<String>,
}

/// Parses `udp`, `tcp` or `tls` into the core's [`Transport`], listing them in `--help`.
/// DTLS is served, but tern's own client does not speak it.
pub fn transport_parser() -> impl clap::builder::TypedValueParser<Value = Transport> {
    use clap::builder::TypedValueParser;
    let names = Transport::ALL.into_iter().filter(|&t| t != Transport::Dtls);
    clap::builder::PossibleValuesParser::new(names.map(Transport::name))
        .try_map(|name| name.parse::<Transport>())
}
