//! `keepsync completions SHELL`: a completion script, generated from the command line's own
//! definitions, on standard output.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::error::Result;

#[derive(Debug, Args)]
#[command(after_help = "\
Installing:
  bash        mkdir -p ~/.local/share/bash-completion/completions
              keepsync completions bash > ~/.local/share/bash-completion/completions/keepsync
  zsh         mkdir -p ~/.zfunc && keepsync completions zsh > ~/.zfunc/_keepsync
              then in ~/.zshrc, before `compinit`: fpath=(~/.zfunc $fpath)
  fish        keepsync completions fish > ~/.config/fish/completions/keepsync.fish
  elvish      in ~/.config/elvish/rc.elv: eval (keepsync completions elvish | slurp)
  powershell  in $PROFILE: keepsync completions powershell | Out-String | Invoke-Expression

Start a new shell afterwards. Run the command again after upgrading keepsync, so that new
subcommands and options complete too.")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: CompletionsArgs) -> Result<()> {
    // Generated into memory first: clap_complete panics when its writer fails, and a closed
    // pipe should be an error like any other.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut super::Cli::command(), "keepsync", &mut script);
    crate::io::write_stdout(&script)
}
