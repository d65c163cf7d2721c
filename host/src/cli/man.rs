//! `keepsync man`: manual pages generated from the command line's own definitions, so they
//! say what `--help` says, examples and exit codes included.

use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_mangen::Man;
use roff::{Roff, roman};

use crate::error::{Error, Result};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  keepsync man | man -l -                          read it now
  keepsync man -o ~/.local/share/man/man1          install for you: `man keepsync-sync`
  sudo keepsync man -o /usr/local/share/man/man1   install for everyone

-o DIR writes keepsync.1 and one page per subcommand (keepsync-sync.1, keepsync-bench-compare.1,
...), creating DIR if needed and replacing the pages of the same names, each atomically. Run
it again after upgrading keepsync.")]
pub struct ManArgs {
    /// Write every page into DIR instead of printing keepsync(1) on standard output.
    #[arg(long, short = 'o', value_name = "DIR")]
    output: Option<PathBuf>,
}

pub fn run(args: ManArgs) -> Result<()> {
    let mut cli = super::Cli::command().disable_help_subcommand(true);
    // Names every subcommand `keepsync-NAME` for its page, as clap_mangen expects.
    cli.build();
    let Some(dir) = args.output else {
        return crate::io::write_stdout(&page(&cli));
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
    let mut pages = Vec::new();
    collect_pages(&cli, &mut pages);
    for (name, text) in &pages {
        crate::output::write_small_file_atomically(&dir.join(name), text)?;
    }
    crate::say::say(&format!(
        "wrote {} pages into {}: keepsync.1 and one keepsync-NAME.1 per subcommand",
        pages.len(),
        dir.display()
    ));
    Ok(())
}

/// The pages of `cmd` and of every subcommand below it, as (file name, roff).
fn collect_pages(cmd: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) {
    pages.push((Man::new(cmd.clone()).get_filename(), page(cmd)));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect_pages(sub, pages);
    }
}

/// One page: clap_mangen's title, synopsis, description, options and subcommands, then the
/// after-help text as sections of its own. (clap_mangen would print that text under EXTRA as
/// one filled paragraph, running the examples and the exit code table together.)
fn page(cmd: &clap::Command) -> Vec<u8> {
    let after_help = cmd.get_after_long_help().or_else(|| cmd.get_after_help()).map(ToString::to_string);
    let bare = cmd.clone().after_help(None::<&str>).after_long_help(None::<&str>);
    let mut rendered = Vec::new();
    Man::new(bare)
        .source(concat!("keepsync ", env!("CARGO_PKG_VERSION")))
        .manual("KeepSync Manual")
        .render(&mut rendered)
        .expect("writing into memory cannot fail");
    let rendered = String::from_utf8(rendered).expect("clap_mangen writes UTF-8");
    // An empty date is written as nothing, which moves the source and the manual one place
    // left among `.TH`'s arguments (clap issue 6040): give it as an empty quoted argument.
    let mut text = String::with_capacity(rendered.len() + 4096);
    for line in rendered.lines() {
        match line.strip_prefix(".TH ").and_then(|args| args.split_once("  ")) {
            Some((title_and_section, rest)) => text.push_str(&format!(".TH {title_and_section} \"\" {rest}")),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    if let Some(after_help) = after_help {
        text.push_str(&after_help_sections(&after_help));
    }
    text.into_bytes()
}

/// The man section a heading of the after-help text goes to.
fn section_title(heading: &str) -> String {
    match heading {
        "Example" | "Examples" => "EXAMPLES".into(),
        "Exit codes" => "EXIT STATUS".into(),
        other => other.to_uppercase(),
    }
}

/// Renders after-help text as man sections. Paragraphs are separated by blank lines; one whose
/// first line is a short heading (at most three words and a colon, followed by an indented
/// line) makes or continues that section, any other goes to NOTES. Indented lines (examples,
/// tables) keep their line breaks; the others are prose, filled by the man reader. Sections
/// come in the order they first appear.
fn after_help_sections(text: &str) -> String {
    let mut sections: Vec<(String, Roff)> = Vec::new();
    for paragraph in text.split("\n\n") {
        let lines: Vec<&str> = paragraph.lines().filter(|l| !l.trim().is_empty()).collect();
        let Some(&first) = lines.first() else { continue };
        let heading = first
            .strip_suffix(':')
            .filter(|h| !is_indented(h) && h.split_whitespace().count() <= 3)
            .filter(|_| lines.get(1).is_some_and(|l| is_indented(l)));
        let (title, body) = match heading {
            Some(h) => (section_title(h), &lines[1..]),
            None => ("NOTES".to_string(), &lines[..]),
        };
        let at = match sections.iter().position(|(t, _)| *t == title) {
            Some(i) => i,
            None => {
                sections.push((title, Roff::new()));
                sections.len() - 1
            }
        };
        let roff = &mut sections[at].1;
        roff.control("PP", []);
        let mut literal = false;
        for line in body {
            if is_indented(line) != literal {
                literal = !literal;
                roff.control(if literal { "nf" } else { "fi" }, []);
            }
            roff.text([roman(*line)]);
        }
        if literal {
            roff.control("fi", []);
        }
    }
    let mut out = Roff::new();
    for (title, body) in sections {
        out.control("SH", [title.as_str()]);
        out.extend([body]);
    }
    // Rendered as clap_mangen renders (apostrophes as \*(Aq, so that examples copy as typed),
    // without the string definition its page already starts with.
    let preamble = Roff::new().render();
    let rendered = out.render();
    rendered.strip_prefix(&preamble).map(str::to_string).unwrap_or(rendered)
}

fn is_indented(line: &str) -> bool {
    line.starts_with(' ') || line.starts_with('\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_make_sections_examples_keep_their_lines_and_prose_goes_to_notes() {
        let text = "\
Examples:
  keepsync pack a -o a.ks    one file
  ssh host 'cat > k'

A paragraph of prose
that the reader fills.
.ks files are containers.

Exit codes:
  0   success
  65  rejected

Several things, each with a colon:
  key = 1
and prose after.";
        let roff = after_help_sections(text);
        let sections: Vec<&str> = roff.lines().filter(|l| l.starts_with(".SH")).collect();
        assert_eq!(sections, [".SH EXAMPLES", ".SH NOTES", ".SH \"EXIT STATUS\""]);
        let examples = &roff[..roff.find(".SH NOTES").unwrap()];
        assert!(examples.contains(".nf\n  keepsync pack a \\-o a.ks    one file\n"), "{roff}");
        // Apostrophes print as typed (not as closing quotes) when pasted from the page.
        assert!(examples.contains("  ssh host \\*(Aqcat > k\\*(Aq\n"), "{roff}");
        assert!(examples.contains(".fi"), "{roff}");
        let notes = &roff[roff.find(".SH NOTES").unwrap()..roff.find(".SH \"EXIT").unwrap()];
        // A line that would be a roff request is escaped.
        assert!(notes.contains("A paragraph of prose\nthat the reader fills.\n\\&.ks files"), "{roff}");
        assert!(notes.contains("Several things, each with a colon:\n.nf\n  key = 1\n.fi\nand prose after."));
        assert!(!notes.contains(".nf\nA paragraph"), "prose is filled: {roff}");
        let exit = &roff[roff.find(".SH \"EXIT").unwrap()..];
        assert!(exit.contains(".nf\n  0   success\n  65  rejected\n.fi"), "{roff}");
    }
}
