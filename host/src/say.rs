//! Lines for a human on stderr (and the server's log), with names from disk or from a peer
//! made harmless: a control character or a bidirectional override in a file name could end
//! the line and forge another (`x\nkeepsync: 9.9.9.9:1: FAKE LOG LINE`) or reorder what a
//! terminal shows. They are written as `\xNN` / `\u{NNNN}` escapes, as `ls -b` does.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` with every control character and bidirectional control escaped.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            c if !needs_escape(c) => out.push(c),
            c if (c as u32) < 0x100 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Prints `keepsync: LINE` on stderr, escaped.
pub fn say(line: &str) {
    eprintln!("keepsync: {}", escape(line));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_cannot_end_the_line_or_reorder_it() {
        assert_eq!(escape("plain/name ü.txt"), "plain/name ü.txt");
        let forged = "x\nkeepsync: 9.9.9.9:1: FAKE LOG LINE";
        let shown = escape(forged);
        assert!(!shown.contains('\n'), "{shown}");
        assert_eq!(shown, "x\\x0akeepsync: 9.9.9.9:1: FAKE LOG LINE");
        assert_eq!(escape("a\rb\x1b[2Jc\u{7f}"), "a\\x0db\\x1b[2Jc\\x7f");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("\u{85}"), "\\x85");
    }
}
