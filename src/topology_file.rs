//! Reads a topology file and loads it, printing every problem to stderr.

use std::path::Path;
use std::process::ExitCode;

use pipeline::env::VarSource;
use pipeline::Topology;
use stages::StageConfig;

/// Exit code for a topology that cannot be used (same as a usage error).
pub const EXIT_BAD_TOPOLOGY: u8 = 2;

/// The validated topology at `path`, or the exit code after printing why not.
pub fn load(path: &Path) -> Result<Topology<StageConfig>, ExitCode> {
    load_text(path).map(|(_, topology)| topology)
}

/// The file's text and the validated topology it holds, or the exit code
/// after printing why not.
pub fn load_text(path: &Path) -> Result<(String, Topology<StageConfig>), ExitCode> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        eprintln!("{}: cannot read: {error}", path.display());
        ExitCode::from(EXIT_BAD_TOPOLOGY)
    })?;
    let topology = pipeline::validate::load::<StageConfig>(&text, &VarSource::Process).map_err(|problems| {
        eprint!("{}: {problems}", path.display());
        ExitCode::from(EXIT_BAD_TOPOLOGY)
    })?;
    Ok((text, topology))
}
