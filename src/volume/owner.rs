//! `UID[:GID]`, `:GID`, `UID:` and names, as coreutils `chown` reads them, without NSS: a
//! static binary in a scratch image has no libc resolver, so names are looked up in
//! /etc/passwd and /etc/group read directly, and only when those files exist.
//!
//! The syntax is checked when the flag is parsed (a malformed owner is a usage error before
//! anything is touched); a name is looked up when the task runs ([`Owner::resolve`]), since
//! that reads files, which `run --check` must not depend on.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::exit::Error;

/// A user or a group, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Id {
    Number(u32),
    Name(String),
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::Name(name) => f.write_str(name),
        }
    }
}

/// An owner as written on the command line: `1001`, `1001:1001`, `:1001`, `1001:` (the
/// user's login group), `app:app`. At least one of user and group is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub user: Option<Id>,
    pub group: Option<Id>,
    /// `USER:`: the group is the user's login group from /etc/passwd.
    pub login_group: bool,
}

/// An owner with every name looked up: what `lchown` is given (`None` = leave as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Ids {
    /// Whether a file owned by `uid:gid` already has this owner.
    pub fn matches(&self, uid: u32, gid: u32) -> bool {
        self.uid.is_none_or(|u| u == uid) && self.gid.is_none_or(|g| g == gid)
    }
}

impl fmt::Display for Ids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.uid, self.gid) {
            (Some(u), Some(g)) => write!(f, "{u}:{g}"),
            (Some(u), None) => write!(f, "{u}"),
            (None, Some(g)) => write!(f, ":{g}"),
            (None, None) => f.write_str(":"),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}")?;
        }
        if let Some(group) = &self.group {
            write!(f, ":{group}")?;
        } else if self.login_group {
            f.write_str(":")?;
        }
        Ok(())
    }
}

/// The largest id a file can have: `u32::MAX` is `-1`, "leave unchanged", to `chown(2)`.
const MAX_ID: u32 = u32::MAX - 1;

fn parse_id(text: &str, what: &str, whole: &str) -> Result<Id, String> {
    // `+1001` forces a number even where a user could be named `1001`, as in coreutils.
    let forced = text.strip_prefix('+');
    let digits = forced.unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match digits.parse::<u32>() {
            Ok(n) if n <= MAX_ID => Ok(Id::Number(n)),
            _ => Err(format!(
                "'{whole}' is not an owner: {what} id {digits} is out of range (0 to {MAX_ID})"
            )),
        };
    }
    if forced.is_some() {
        return Err(format!(
            "'{whole}' is not an owner: '+' must be followed by a numeric {what} id"
        ));
    }
    // The portable name characters (POSIX), plus the trailing `$` of Samba machine accounts.
    let valid = text.bytes().enumerate().all(|(i, b)| {
        b.is_ascii_alphanumeric()
            || b == b'_'
            || b == b'.'
            || (b == b'-' && i > 0)
            || (b == b'$' && i == text.len() - 1)
    });
    if valid {
        Ok(Id::Name(text.to_owned()))
    } else {
        Err(format!(
            "'{whole}' is not an owner: '{text}' is neither a numeric {what} id nor a {what} name"
        ))
    }
}

impl FromStr for Owner {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = "use UID, UID:GID, :GID or UID: (the user's login group), e.g. 1001:1001";
        let (user, group) = match text.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (text, None),
        };
        if group.is_some_and(|g| g.contains(':')) {
            return Err(format!(
                "'{text}' is not an owner: more than one ':'; {usage}"
            ));
        }
        let user = match user {
            "" => None,
            user => Some(parse_id(user, "user", text)?),
        };
        let (group, login_group) = match group {
            None => (None, false),
            Some("") => (None, true),
            Some(group) => (Some(parse_id(group, "group", text)?), false),
        };
        if user.is_none() && group.is_none() {
            return Err(format!(
                "'{text}' is not an owner: it names no user and no group; {usage}"
            ));
        }
        if user.is_none() && login_group {
            unreachable!("':' alone has no user and no group");
        }
        Ok(Owner {
            user,
            group,
            login_group,
        })
    }
}

impl<'de> serde::Deserialize<'de> for Owner {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Owner {
    /// Looks names up in /etc/passwd and /etc/group. A name that cannot be looked up is a
    /// usage error (exit 2) that says to give numbers.
    pub fn resolve(&self) -> Result<Ids, Error> {
        self.resolve_in(Path::new("/etc"))
    }

    /// [`resolve`](Self::resolve) against the passwd and group files of `etc`.
    pub fn resolve_in(&self, etc: &Path) -> Result<Ids, Error> {
        let needs_passwd = matches!(self.user, Some(Id::Name(_))) || self.login_group;
        let passwd = if needs_passwd {
            Some(read_database(&etc.join("passwd"), self)?)
        } else {
            None
        };
        let mut uid = None;
        let mut login_gid = None;
        match &self.user {
            Some(Id::Number(n)) => {
                uid = Some(*n);
                if self.login_group {
                    login_gid = passwd.as_deref().and_then(|text| {
                        passwd_entries(text)
                            .find(|e| e.uid == Some(*n))
                            .and_then(|e| e.gid)
                    });
                }
            }
            Some(Id::Name(name)) => {
                let entry = passwd
                    .as_deref()
                    .and_then(|text| passwd_entries(text).find(|e| e.name == name));
                let Some(entry) = entry else {
                    return Err(Error::Usage(format!(
                        "owner '{self}': no user '{name}' in {}; give a numeric uid",
                        etc.join("passwd").display()
                    )));
                };
                uid = entry.uid;
                login_gid = entry.gid;
            }
            None => {}
        }
        let gid = match &self.group {
            Some(Id::Number(n)) => Some(*n),
            Some(Id::Name(name)) => {
                let file = etc.join("group");
                let text = read_database(&file, self)?;
                let gid = text.lines().find_map(|line| {
                    let mut fields = line.split(':');
                    (fields.next() == Some(name.as_str()))
                        .then(|| fields.nth(1).and_then(|g| g.parse::<u32>().ok()))
                        .flatten()
                });
                match gid {
                    Some(gid) => Some(gid),
                    None => {
                        return Err(Error::Usage(format!(
                            "owner '{self}': no group '{name}' in {}; give a numeric gid",
                            file.display()
                        )));
                    }
                }
            }
            None if self.login_group => match login_gid {
                Some(gid) => Some(gid),
                None => {
                    return Err(Error::Usage(format!(
                        "owner '{self}': the user has no login group in {}; give the group \
                         (e.g. {}:{})",
                        etc.join("passwd").display(),
                        self.user.as_ref().map(Id::to_string).unwrap_or_default(),
                        self.user.as_ref().map(Id::to_string).unwrap_or_default(),
                    )));
                }
            },
            None => None,
        };
        Ok(Ids { uid, gid })
    }
}

fn read_database(file: &Path, owner: &Owner) -> Result<String, Error> {
    std::fs::read_to_string(file).map_err(|error| {
        Error::Usage(format!(
            "owner '{owner}': cannot look names up in {} ({}); give numeric ids, \
             e.g. 1001:1001",
            file.display(),
            crate::reason::io(&error)
        ))
    })
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: Option<u32>,
    gid: Option<u32>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok();
        let gid = fields.next().and_then(|g| g.parse().ok());
        Some(PasswdEntry { name, uid, gid })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(text: &str) -> Owner {
        text.parse().unwrap()
    }

    #[test]
    fn numbers_names_and_the_coreutils_forms_parse() {
        let n = |v| Some(Id::Number(v));
        assert_eq!(
            owner("1001"),
            Owner {
                user: n(1001),
                group: None,
                login_group: false
            }
        );
        assert_eq!(
            owner("1001:0"),
            Owner {
                user: n(1001),
                group: n(0),
                login_group: false
            }
        );
        assert_eq!(
            owner(":1001"),
            Owner {
                user: None,
                group: n(1001),
                login_group: false
            }
        );
        assert_eq!(
            owner("1001:"),
            Owner {
                user: n(1001),
                group: None,
                login_group: true
            }
        );
        assert_eq!(
            owner("+7"),
            Owner {
                user: n(7),
                group: None,
                login_group: false
            }
        );
        assert_eq!(
            owner("www-data:adm"),
            Owner {
                user: Some(Id::Name("www-data".into())),
                group: Some(Id::Name("adm".into())),
                login_group: false
            }
        );
        for text in ["1001", "1001:0", ":1001", "1001:", "app:app"] {
            assert_eq!(owner(text).to_string(), text);
        }
    }

    #[test]
    fn malformed_owners_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "names no user and no group"),
            (":", "names no user and no group"),
            ("1:2:3", "more than one ':'"),
            ("4294967295", "out of range"),
            ("99999999999", "out of range"),
            ("a b", "neither a numeric user id nor a user name"),
            ("1001:-1", "neither a numeric group id nor a group name"),
            ("-1", "neither"),
            ("+x", "must be followed by a numeric"),
            ("us/er", "neither"),
        ] {
            let error = text.parse::<Owner>().unwrap_err();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn names_are_looked_up_in_passwd_and_group_files() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(
            etc.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1001:1002::/home/app:/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(etc.path().join("group"), "root:x:0:\nstaff:x:50:app\n").unwrap();
        let ids = |text: &str| owner(text).resolve_in(etc.path());
        assert_eq!(
            ids("app").unwrap(),
            Ids {
                uid: Some(1001),
                gid: None
            }
        );
        assert_eq!(
            ids("app:").unwrap(),
            Ids {
                uid: Some(1001),
                gid: Some(1002)
            }
        );
        assert_eq!(
            ids("1001:").unwrap(),
            Ids {
                uid: Some(1001),
                gid: Some(1002)
            }
        );
        assert_eq!(
            ids("app:staff").unwrap(),
            Ids {
                uid: Some(1001),
                gid: Some(50)
            }
        );
        assert_eq!(
            ids(":staff").unwrap(),
            Ids {
                uid: None,
                gid: Some(50)
            }
        );
        assert_eq!(
            ids("7:8").unwrap(),
            Ids {
                uid: Some(7),
                gid: Some(8)
            }
        );
        let error = ids("nobody").unwrap_err();
        assert!(
            matches!(&error, Error::Usage(m) if m.contains("no user 'nobody'")),
            "{error}"
        );
        let error = ids(":wheel").unwrap_err();
        assert!(
            matches!(&error, Error::Usage(m) if m.contains("no group 'wheel'")),
            "{error}"
        );
        let error = ids("4242:").unwrap_err();
        assert!(
            matches!(&error, Error::Usage(m) if m.contains("no login group")),
            "{error}"
        );
    }

    #[test]
    fn without_passwd_names_are_a_usage_error_and_numbers_still_work() {
        let empty = tempfile::tempdir().unwrap();
        let error = owner("app:app").resolve_in(empty.path()).unwrap_err();
        assert!(
            matches!(&error, Error::Usage(m) if m.contains("give numeric ids")),
            "{error}"
        );
        assert_eq!(
            owner("1001:1001").resolve_in(empty.path()).unwrap(),
            Ids {
                uid: Some(1001),
                gid: Some(1001)
            }
        );
    }
}
