//! The worker's program as the master finds it before forking (PATH,
//! relative paths), and what an exec failure means in words an operator can
//! act on. Not used between fork and exec: the child gets a resolved path.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::supervisor::spec::WorkerSpec;

/// What an exec failure means, in words an operator can act on: the
/// kernel's ENOENT for a script whose interpreter is missing, or EACCES for
/// a directory, say nothing of the kind.
pub(super) fn explain_exec(program: &Path, e: &io::Error) -> String {
    use std::os::unix::fs::PermissionsExt;
    let shown = program.display();
    if !program.as_os_str().as_bytes().contains(&b'/') {
        return format!("`{shown}` is not found on PATH");
    }
    let Ok(meta) = std::fs::metadata(program) else {
        return format!("{e} (looked for {shown})");
    };
    if meta.is_dir() {
        return format!("{shown} is a directory, not a program");
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return format!("{shown} is not executable (chmod +x {shown})");
    }
    if e.raw_os_error() == Some(libc::ENOENT) {
        if let Some(interpreter) = interpreter_of(program) {
            if !interpreter.exists() {
                return format!(
                    "{shown} names the interpreter {} on its #! line, which does not exist",
                    interpreter.display()
                );
            }
        }
    }
    format!("{e} ({shown})")
}

/// The interpreter a script's `#!` line names.
fn interpreter_of(program: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let file = std::fs::File::open(program).ok()?;
    let n = file.take(head.len() as u64).read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let word = line
        .split(|b| b.is_ascii_whitespace())
        .find(|w| !w.is_empty())?;
    Some(PathBuf::from(OsStr::from_bytes(word)))
}

/// Whether `spec`'s program can be started, checked as a spawn would find
/// it, without starting it: for `prefork check`.
pub fn preflight(spec: &WorkerSpec) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let program = PathBuf::from(resolve(&spec.command[0], path_of(spec).as_deref()));
    let not_found = explain_exec(&program, &io::Error::from_raw_os_error(libc::ENOENT));
    let meta = std::fs::metadata(&program).map_err(|_| not_found)?;
    if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
        return Err(explain_exec(
            &program,
            &io::Error::from_raw_os_error(libc::EACCES),
        ));
    }
    if let Some(interpreter) = interpreter_of(&program) {
        if !interpreter.exists() {
            return Err(explain_exec(
                &program,
                &io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
    }
    Ok(program)
}

/// The PATH a worker runs with: its spec's, or the master's.
pub(super) fn path_of(spec: &WorkerSpec) -> Option<OsString> {
    spec.env
        .iter()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.clone())
        .or_else(|| std::env::var_os("PATH"))
}

/// `program`'s path on `path`, like execvp would find it; the program itself
/// when it is not found (exec then says so). A relative path is relative to
/// the directory prefork was started in, as every path prefork is given,
/// even when the worker starts elsewhere (`working_directory`).
pub(super) fn resolve(program: &OsStr, path: Option<&OsStr>) -> OsString {
    use std::os::unix::fs::PermissionsExt;
    if program.as_bytes().contains(&b'/') {
        return std::path::absolute(program).map_or_else(|_| program.to_owned(), Into::into);
    }
    let dirs = std::env::split_paths(path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin")));
    dirs.filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .map_or_else(|| program.to_owned(), Into::into)
}
