use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::net::server::{ServeKeys, ServeOptions, serve};
use crate::net::{DEFAULT_PORT, RateLimiter};

#[derive(Debug, Args)]
#[command(after_help = "\
Clients run `keepsync sync SRC ks://HOST:PORT/PATH --psk-file FILE` (push) or
`keepsync sync ks://HOST:PORT/PATH DEST --psk-file FILE` (pull). Both sides must hold the same
PSK file: make it once with `keepsync keygen -o FILE` and copy it over a secure channel.

Every path a client names is confined to --root: no absolute paths, no `..`, and nothing is
written through a symlink. A push writes into DEST/.keepsync-partial/ first and renames each
file into place only after its BLAKE3 matches the sender's; an interrupted push resumes there.
One log line per connection goes to stderr. Stop the server with Ctrl-C.

Several clients, each with its own key, subtree and rights (--clients FILE):
  [[client]]
  name = \"laptop\"
  key_file = \"keys/laptop.key\"   # keepsync keygen -o keys/laptop.key; relative to FILE
  root = \"laptop\"                # its subtree of --root (\".\" for all); its paths start there
  mode = \"append-only\"           # read-write | append-only (add files, never change or
                                 # delete any: ransomware cannot destroy backups) | read-only
The client runs `keepsync sync ... --psk-file laptop.key`: its key names itself (by a hash,
never the key), and an unknown key fails like a wrong one. `kill -HUP` reads FILE again:
new clients may connect at once, and the connections of removed or changed clients end.

Example:
  keepsync keygen -o sync.psk
  keepsync serve --root /srv/backup --listen 0.0.0.0:7373 --psk-file sync.psk")]
pub struct ServeArgs {
    /// Directory to serve; clients' paths are confined to it.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR", default_value_t = format!("127.0.0.1:{DEFAULT_PORT}"))]
    listen: String,
    /// Pre-shared key file (from `keepsync keygen`), the same on both sides: one client
    /// with full rights on the whole root.
    #[arg(long, value_name = "FILE", required_unless_present = "clients", conflicts_with = "clients")]
    psk_file: Option<PathBuf>,
    /// Clients file: each client's name, key file, subtree and mode (read-write,
    /// append-only, read-only); see below. `kill -HUP` reads it again.
    #[arg(long, value_name = "FILE")]
    clients: Option<PathBuf>,
    /// Bandwidth limit for all connections together: 10MiB, off, or a timetable like
    /// "08:00,512KiB 18:00,off" (local time).
    #[arg(long, value_name = "RATE")]
    limit_rate: Option<String>,
    /// Make received data durable (fsync + checkpoint) every SIZE per file: an interrupted
    /// push resends at most this much.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = crate::units::parse_size)]
    checkpoint_every: u64,
    /// Connections served at once (each holds a thread and about 6 MiB of buffers); more wait
    /// to be accepted until one ends.
    #[arg(long, value_name = "N", default_value_t = crate::net::server::MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_connections: u16,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let keys = match (&args.psk_file, &args.clients) {
        (Some(psk_file), _) => {
            // A server holds the key for every client: one that others on this machine can
            // read is refused, not warned about (the clients file's keys likewise).
            if let Some(why) = crate::keys::exposure(psk_file) {
                return Err(Error::Usage(format!("refusing to serve: {why}")));
            }
            ServeKeys::One(crate::keys::read_key_file(psk_file)?)
        }
        (None, Some(clients)) => ServeKeys::Clients(clients.clone()),
        (None, None) => return Err(Error::Usage("pass --psk-file FILE or --clients FILE".into())),
    };
    let limit = match &args.limit_rate {
        Some(spec) => RateLimiter::parse(spec).map_err(|e| Error::Usage(format!("--limit-rate {e}")))?,
        None => RateLimiter::unlimited(),
    };
    let opts = ServeOptions {
        root: args.root,
        listen: args.listen,
        keys,
        limit,
        checkpoint_every: args.checkpoint_every.max(1 << 16),
        max_connections: usize::from(args.max_connections),
    };
    // The accept loop needs one thread; every connection gets a thread of its own.
    crate::net::block_on(serve(opts))
}
