//! Who a worker runs as, and with what limits (issue 14): resolved from
//! names when the configuration is loaded, so that an unknown user or group,
//! or a switch the master may not make, refuses the start (exit 2) or the
//! reload (nothing changes) before anything is forked. The child then only
//! applies numbers (see `child.rs`): setrlimit, setpriority, umask,
//! setgroups, setgid, setuid, each a plain system call.
//!
//! Resolving a name reads the user and group databases through NSS
//! (`/etc/passwd` and `/etc/group`, or whatever nsswitch.conf names): a few
//! file reads in practice, bounded, done once per load and never between
//! fork and exec.
//!
//! The master keeps its own privileges: it binds ports below 1024 and reads
//! every worker's `/proc`. The board's directory stays the master's (mode
//! 0700 when private): a worker never opens it by path, it writes through
//! the status file's descriptor, opened read-write before the drop. The
//! kernel checks permissions when a file is opened, not when it is written,
//! so the worker, now another user, still writes its status.

use std::ffi::CString;

use nix::sys::resource::{getrlimit, Resource};
use nix::unistd::{getgrouplist, Gid, Group, Uid, User};

use super::Stage;
use crate::supervisor::spec::WorkerSpec;

/// The user and groups workers switch to, as numbers, with the names they
/// were given (for messages and `prefork check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// `user` as given: a name or a number.
    pub user: Option<String>,
    /// `group` as given.
    pub group: Option<String>,
    /// `None`: the worker keeps the master's user.
    pub uid: Option<u32>,
    pub gid: u32,
    /// The supplementary groups, as `initgroups` would set them: every group
    /// that lists the user, and `gid`. `None`: unchanged (a group given
    /// alone, or a master that is not root and switches to nothing).
    pub groups: Option<Vec<u32>>,
}

impl RunAs {
    /// The group as given, or the user's primary group.
    fn group_name(&self) -> String {
        match (&self.group, &self.user) {
            (Some(group), _) => group.clone(),
            (None, Some(user)) => format!("{} (the primary group of {user})", self.gid),
            (None, None) => self.gid.to_string(),
        }
    }
}

/// What the child failed to do at `stage` (one of the steps of this
/// module), in words that name the value.
pub(super) fn describe(stage: Stage, spec: &WorkerSpec) -> String {
    let limit = |value: Option<u64>| value.map_or("?".to_string(), show_limit);
    let run_as = spec.run_as.as_ref();
    let user = run_as.and_then(|r| r.user.as_deref()).unwrap_or("?");
    match stage {
        Stage::Nofile => match spec.rlimit_nofile {
            Some(n) => format!("cannot set rlimit_nofile to {}", show_limit(n)),
            None => "cannot give back the descriptor limit prefork was started with".into(),
        },
        Stage::Core => format!("cannot set rlimit_core to {}", limit(spec.rlimit_core)),
        Stage::Nice => format!(
            "cannot set nice to {}",
            spec.nice.map_or("?".to_string(), |n| n.to_string())
        ),
        Stage::Groups => format!("cannot set the supplementary groups of user {user}"),
        Stage::Group => format!(
            "cannot switch to group {}",
            run_as.map_or("?".to_string(), RunAs::group_name)
        ),
        _ => format!("cannot switch to user {user}"),
    }
}

/// Resolves `user` and `group` (names, or numbers when no such name
/// exists), and checks that this process may switch to them: root may
/// switch to anyone; any other user only to itself and its own group.
/// `None` when neither is given.
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<RunAs>, String> {
    if user.is_none() && group.is_none() {
        return Ok(None);
    }
    let account = user.map(find_user).transpose()?;
    let gid = match group {
        Some(group) => find_group(group)?,
        None => match &account {
            Some((_, Some(entry))) => entry.gid.as_raw(),
            Some((uid, None)) => {
                return Err(format!(
                    "user {} (uid {uid}) has no entry in the user database, so no primary \
                     group: give `group` too",
                    user.unwrap_or_default()
                ))
            }
            None => unreachable!("a user or a group is given"),
        },
    };
    let groups = match &account {
        // As initgroups: the groups that list the user, plus the primary one.
        Some((_, Some(entry))) => {
            let name = CString::new(entry.name.as_bytes())
                .map_err(|_| format!("user {:?} contains a NUL byte", entry.name))?;
            let list = getgrouplist(&name, Gid::from_raw(gid))
                .map_err(|e| format!("cannot list the groups of user {}: {e}", entry.name))?;
            Some(list.into_iter().map(Gid::as_raw).collect())
        }
        Some((_, None)) => Some(vec![gid]),
        None => None,
    };
    let mut run_as = RunAs {
        user: user.map(str::to_string),
        group: group.map(str::to_string),
        uid: account.map(|(uid, _)| uid),
        gid,
        groups,
    };
    if !Uid::effective().is_root() {
        check_permitted(&run_as)?;
        // Its own uid and gid, which setuid and setgid accept; setgroups
        // needs CAP_SETGID even to set the same list.
        run_as.groups = None;
    }
    Ok(Some(run_as))
}

/// A user by name, else by number: its uid, and its entry when it has one.
fn find_user(text: &str) -> Result<(u32, Option<User>), String> {
    let lookup =
        |r: nix::Result<Option<User>>| r.map_err(|e| format!("cannot look up user {text}: {e}"));
    if let Some(entry) = lookup(User::from_name(text))? {
        return Ok((entry.uid.as_raw(), Some(entry)));
    }
    let Ok(uid) = text.parse::<u32>() else {
        return Err(format!("unknown user {text}: no such user"));
    };
    Ok((uid, lookup(User::from_uid(Uid::from_raw(uid)))?))
}

/// A group by name, else by number.
fn find_group(text: &str) -> Result<u32, String> {
    let found = Group::from_name(text).map_err(|e| format!("cannot look up group {text}: {e}"))?;
    match (found, text.parse::<u32>()) {
        (Some(entry), _) => Ok(entry.gid.as_raw()),
        (None, Ok(gid)) => Ok(gid),
        (None, Err(_)) => Err(format!("unknown group {text}: no such group")),
    }
}

/// For a master that is not root, which may not set supplementary groups
/// nor take another uid or gid: naming its own changes nothing, and naming
/// another is refused now rather than by every worker's set-up.
fn check_permitted(run_as: &RunAs) -> Result<(), String> {
    let me = Uid::current().as_raw();
    if let Some(uid) = run_as.uid.filter(|&uid| uid != me) {
        return Err(format!(
            "cannot switch to user {} (uid {uid}): prefork runs as uid {me}, not root: \
             Operation not permitted",
            run_as.user.as_deref().unwrap_or_default()
        ));
    }
    let my_gid = Gid::current().as_raw();
    if run_as.gid != my_gid {
        return Err(format!(
            "cannot switch to group {} (gid {}): prefork runs as gid {my_gid}, not root: \
             Operation not permitted",
            run_as.group_name(),
            run_as.gid
        ));
    }
    Ok(())
}

/// A resource limit that is "unlimited".
pub const UNLIMITED: u64 = libc::RLIM_INFINITY;

/// For a master that is not root: a limit above its own hard limit, or a
/// nice value below what it may take, would be refused to every worker's
/// set-up; refuse it now, by name. Root may do all of it.
pub fn check_limits(
    nofile: Option<u64>,
    core: Option<u64>,
    nice: Option<i32>,
) -> Result<(), String> {
    if Uid::effective().is_root() {
        return Ok(());
    }
    let limits = [
        ("rlimit_nofile", Resource::RLIMIT_NOFILE, nofile),
        ("rlimit_core", Resource::RLIMIT_CORE, core),
    ];
    for (key, resource, value) in limits {
        let Some(value) = value else { continue };
        let (_, hard) = getrlimit(resource).map_err(|e| format!("{key}: {e}"))?;
        if hard != UNLIMITED && (value > hard) {
            return Err(format!(
                "{key} = {}: above the hard limit of {hard} prefork was started with, which \
                 only root may raise: Operation not permitted",
                show_limit(value)
            ));
        }
    }
    if let Some(nice) = nice {
        // The lowest nice value RLIMIT_NICE allows (20 - its soft limit),
        // or the master's own, whichever is lower.
        let floor = match getrlimit(Resource::RLIMIT_NICE) {
            Ok((soft, _)) => 20 - soft.min(40) as i32,
            Err(_) => 20,
        };
        let own = own_nice();
        if nice < own.min(floor) {
            return Err(format!(
                "nice = {nice}: below prefork's own nice value ({own}), which only root may \
                 set: Permission denied"
            ));
        }
    }
    Ok(())
}

/// A limit as the configuration writes it.
pub fn show_limit(value: u64) -> String {
    match value {
        UNLIMITED => "unlimited".to_string(),
        n => n.to_string(),
    }
}

/// This process's nice value.
fn own_nice() -> i32 {
    // getpriority returns -1 both as a value and as an error; errno tells.
    nix::errno::Errno::clear();
    // SAFETY: getpriority reads no memory of ours.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    match nix::errno::Errno::last_raw() {
        0 => nice,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_given_is_no_switch() {
        assert_eq!(resolve(None, None), Ok(None));
    }

    #[test]
    fn an_unknown_user_or_group_is_named() {
        let e = resolve(Some("no-such-user-prefork"), None).unwrap_err();
        assert!(e.contains("unknown user no-such-user-prefork"), "{e}");
        let e = resolve(None, Some("no-such-group-prefork")).unwrap_err();
        assert!(e.contains("unknown group no-such-group-prefork"), "{e}");
    }

    #[test]
    fn the_own_user_is_always_permitted_with_its_groups() {
        let me = User::from_uid(Uid::current()).unwrap().expect("an entry");
        let run_as = resolve(Some(&me.name), None).unwrap().unwrap();
        assert_eq!(run_as.uid, Some(me.uid.as_raw()));
        assert_eq!(run_as.gid, me.gid.as_raw());
        assert!(run_as.groups.unwrap().contains(&me.gid.as_raw()));
        // A number that names no one is taken as a number, with a group.
        let run_as = resolve(None, Some(&Gid::current().to_string())).unwrap();
        assert_eq!(run_as.unwrap().uid, None);
    }
}
