//! Several inputs in one `pack` or `unpack`: where each output goes, and running every input
//! even when one fails.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ReportArgs;
use crate::error::{Error, Result, exit};
use crate::keys::{KeySpec, SessionKeys};

/// How an output is named from its input when `-o` does not name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `pack`: `a.log` → `a.log.ks`.
    Pack,
    /// `unpack`: `a.log.ks` → `a.log`.
    Unpack,
}

impl Naming {
    fn command(self) -> &'static str {
        match self {
            Self::Pack => "pack",
            Self::Unpack => "unpack",
        }
    }

    fn output_name(self, input: &Path) -> Result<OsString> {
        let Some(name) = input.file_name() else {
            return Err(Error::Usage(format!("{} is not a file name", input.display())));
        };
        match self {
            Self::Pack => {
                let mut out = name.to_os_string();
                out.push(".ks");
                Ok(out)
            }
            Self::Unpack => match name.to_str().and_then(|n| n.strip_suffix(".ks")) {
                Some(stem) if !stem.is_empty() => Ok(stem.into()),
                _ => Err(Error::Usage(format!(
                    "cannot name the output of {}: its name does not end in .ks; unpack it on its own \
                     with -o FILE",
                    input.display()
                ))),
            },
        }
    }
}

/// One input and where its output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The input, as given (`-` is standard input).
    pub input: PathBuf,
    /// The output (`-` is standard output).
    pub output: PathBuf,
}

/// Decides every input's output before anything is written, refusing combinations that
/// cannot mean one thing. One input with `-o FILE` or `-o -` is exactly the classic form.
pub fn plan(inputs: &[PathBuf], output: Option<&Path>, naming: Naming) -> Result<Vec<Job>> {
    let cmd = naming.command();
    let stdio = Path::new("-");
    let into_dir = output.filter(|o| *o != stdio && o.is_dir());
    if let ([input], Some(output)) = (inputs, output)
        && into_dir.is_none()
    {
        return Ok(vec![Job { input: input.clone(), output: output.to_path_buf() }]);
    }
    if inputs.iter().any(|i| i == stdio) {
        return Err(Error::Usage(if inputs.len() == 1 {
            "standard input has no name to name the output after: pass -o FILE, or -o - for standard \
             output"
                .into()
        } else {
            format!("- (standard input) can only be given alone: `keepsync {cmd} - -o FILE` (or -o -)")
        }));
    }
    match (output, into_dir) {
        (Some(o), None) if o == stdio => {
            return Err(Error::Usage(format!(
                "{} inputs cannot all go to standard output: drop -o to write each output beside its \
                 input, or pass -o DIR",
                inputs.len()
            )));
        }
        (Some(o), None) => {
            return Err(Error::Usage(format!(
                "-o {} names one output file, but {} inputs were given: pass -o DIR (an existing \
                 directory) to write them all there, or drop -o to write each output beside its input",
                o.display(),
                inputs.len()
            )));
        }
        _ => {}
    }
    let mut jobs: Vec<Job> = Vec::with_capacity(inputs.len());
    for input in inputs {
        let name = naming.output_name(input)?;
        let output = match into_dir {
            Some(dir) => dir.join(name),
            None => input.with_file_name(name),
        };
        if let Some(twin) = jobs.iter().find(|j| j.output == output) {
            return Err(Error::Usage(format!(
                "{} and {} would both be written to {}: {cmd} them in separate runs or into different \
                 -o directories",
                twin.input.display(),
                input.display(),
                output.display()
            )));
        }
        jobs.push(Job { input: input.clone(), output });
    }
    Ok(jobs)
}

/// An input that failed, in the `--json` summary of several inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    /// The input.
    pub input: String,
    /// The error message.
    pub error: String,
    /// The exit code this failure alone would have had.
    exit_code: u8,
}

/// The `--json` summary of several inputs.
#[derive(Debug, Serialize)]
struct Summary<'a, T> {
    files: &'a [T],
    failed: &'a [Failed],
    argon2id_runs: u32,
}

/// What running several jobs did.
#[derive(Debug)]
pub struct Outcome<T> {
    /// Summaries of the jobs that succeeded.
    pub done: Vec<T>,
    /// The jobs that failed.
    pub failed: Vec<Failed>,
}

/// Runs `one` for each job with one key session (`pack` and `unpack` alike). One job runs as
/// it always did: its own `--json` summary, its error as the command's. Several get a
/// `prefix` naming the input in their notices, go through [`run_each`], and end with one
/// summary; a missing key fails once up front rather than once per input.
pub fn run_all<T: Serialize>(
    jobs: &[Job],
    out: &ReportArgs,
    keys: &mut SessionKeys,
    verb: &str,
    mut one: impl FnMut(&mut SessionKeys, &Job, &str) -> Result<T>,
) -> Result<()> {
    if matches!(keys.spec(), KeySpec::Prompt { .. }) {
        // A passphrase is typed before any progress bar is drawn.
        keys.preflight()?;
    }
    if let [job] = jobs {
        let summary = one(keys, job, "");
        out.note_key_memory(keys);
        out.print_json(&summary?);
        return Ok(());
    }
    keys.preflight()?;
    let outcome = run_each(jobs, |job| one(keys, job, &format!("{}: ", job.input.display())));
    out.note_key_memory(keys);
    outcome.finish(out, verb, keys.argon2id_runs())
}

/// Runs `one` for every job, in order. A failure is reported at once (naming its input) and
/// the next input still runs; outputs already completed stay.
pub fn run_each<T>(jobs: &[Job], mut one: impl FnMut(&Job) -> Result<T>) -> Outcome<T> {
    let mut outcome = Outcome { done: Vec::new(), failed: Vec::new() };
    for job in jobs {
        match one(job) {
            Ok(summary) => outcome.done.push(summary),
            Err(e) => {
                let input = job.input.display().to_string();
                super::report(&e, Some(&input));
                outcome.failed.push(Failed { input, error: e.to_string(), exit_code: e.exit_code() });
            }
        }
    }
    outcome
}

impl<T: Serialize> Outcome<T> {
    /// Prints the summaries (`--json`, `-v`) and fails if any input failed, with the exit code
    /// the failures share (1 when they differ).
    pub fn finish(self, out: &ReportArgs, verb: &str, argon2id_runs: u32) -> Result<()> {
        let total = self.done.len() + self.failed.len();
        out.print_summary(|| {
            let runs = match argon2id_runs {
                0 => String::new(),
                1 => ", deriving the passphrase key once (1 Argon2id run)".into(),
                n => format!(", {n} Argon2id runs (one per passphrase session found)"),
            };
            format!("{verb} {} of {total} files{runs}", self.done.len())
        });
        out.print_json(&Summary { files: &self.done, failed: &self.failed, argon2id_runs });
        let Some(first) = self.failed.first() else { return Ok(()) };
        let same = self.failed.iter().all(|f| f.exit_code == first.exit_code);
        Err(Error::SomeInputsFailed {
            failed: self.failed.len(),
            total,
            exit_code: if same { first.exit_code } else { exit::FAILURE },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(names: &[&str]) -> Vec<PathBuf> {
        names.iter().map(PathBuf::from).collect()
    }

    fn usage(r: Result<Vec<Job>>) -> String {
        match r {
            Err(Error::Usage(msg)) => msg,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn one_input_with_o_is_the_classic_form() {
        for (input, output) in [("a", "b.ks"), ("-", "-"), ("a", "-"), ("-", "x")] {
            let jobs = plan(&paths(&[input]), Some(Path::new(output)), Naming::Pack).unwrap();
            assert_eq!(jobs, [Job { input: input.into(), output: output.into() }]);
        }
    }

    #[test]
    fn outputs_go_beside_inputs_or_into_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let jobs = plan(&paths(&["x/a.log", "b.log"]), None, Naming::Pack).unwrap();
        let outs: Vec<_> = jobs.iter().map(|j| j.output.clone()).collect();
        assert_eq!(outs, [PathBuf::from("x/a.log.ks"), PathBuf::from("b.log.ks")]);
        let jobs = plan(&paths(&["x/a.log.ks"]), Some(dir.path()), Naming::Unpack).unwrap();
        assert_eq!(jobs[0].output, dir.path().join("a.log"));
    }

    #[test]
    fn ambiguous_combinations_are_refused_with_what_to_do() {
        let several = paths(&["a", "b"]);
        assert!(usage(plan(&several, Some(Path::new("c.ks")), Naming::Pack)).contains("pass -o DIR"));
        assert!(usage(plan(&several, Some(Path::new("-")), Naming::Pack)).contains("standard output"));
        assert!(usage(plan(&paths(&["a", "-"]), None, Naming::Pack)).contains("only be given alone"));
        assert!(usage(plan(&paths(&["-"]), None, Naming::Unpack)).contains("pass -o FILE"));
        assert!(usage(plan(&paths(&["a.txt"]), None, Naming::Unpack)).contains("does not end in .ks"));
        assert!(usage(plan(&paths(&["x/a", "y/a"]), Some(Path::new(".")), Naming::Pack)).contains("both"));
        assert!(usage(plan(&paths(&["a", "a"]), None, Naming::Pack)).contains("both"));
    }
}
