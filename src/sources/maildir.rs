//! A Maildir as a source: messages are taken from `new/` and moved to `cur/`
//! (flagged seen) only after their transaction committed. Files left in
//! `new/` by a crash are simply taken again; the dedupe key makes that
//! harmless.

use std::path::{Path, PathBuf};

/// A Maildir directory.
#[derive(Debug, Clone)]
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    /// Opens a Maildir, creating `new/`, `cur/` and `tmp/` when missing.
    pub fn open(root: &Path) -> std::io::Result<Maildir> {
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        Ok(Maildir {
            root: root.to_path_buf(),
        })
    }

    /// The Maildir's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `new/` directory (watched for changes).
    pub fn new_dir(&self) -> PathBuf {
        self.root.join("new")
    }

    /// Files waiting in `new/`, oldest name first (Maildir names start with
    /// the delivery time), at most `limit`, leaving out those `skip` names
    /// (files that are left there on purpose, too big to take).
    pub fn pending(
        &self,
        limit: usize,
        skip: impl Fn(&Path) -> bool,
    ) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.new_dir())?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .filter(|p| !skip(p))
            .collect();
        files.sort();
        files.truncate(limit);
        Ok(files)
    }

    /// When a message file in `new/` was delivered: its modification time
    /// (a delivery writes the file in `tmp/` and renames it into `new/`,
    /// which keeps that time), else the time-stamp its name starts with
    /// (`<seconds>.<unique>.<host>`, the Maildir convention).
    pub fn delivered_at(file: &Path) -> Option<jiff::Timestamp> {
        std::fs::metadata(file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| jiff::Timestamp::try_from(t).ok())
            .or_else(|| {
                let name = file.file_name()?.to_str()?;
                let secs: i64 = name.split('.').next()?.parse().ok()?;
                jiff::Timestamp::from_second(secs).ok()
            })
    }

    /// Acknowledges a stored message: moves it from `new/` to `cur/` with
    /// the Seen flag.
    pub fn acknowledge(&self, file: &Path) -> std::io::Result<PathBuf> {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target_name = match name.split_once(":2,") {
            Some((base, flags)) if flags.contains('S') => format!("{base}:2,{flags}"),
            Some((base, flags)) => {
                let mut f: Vec<char> = flags.chars().chain(std::iter::once('S')).collect();
                f.sort_unstable();
                format!("{base}:2,{}", f.into_iter().collect::<String>())
            }
            None => format!("{name}:2,S"),
        };
        let target = self.root.join("cur").join(target_name);
        std::fs::rename(file, &target)?;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_then_acknowledged() {
        let d = tempfile::tempdir().unwrap();
        let m = Maildir::open(d.path()).unwrap();
        std::fs::write(m.new_dir().join("2.b"), "x").unwrap();
        std::fs::write(m.new_dir().join("1.a"), "y").unwrap();
        std::fs::write(m.new_dir().join(".hidden"), "z").unwrap();
        let p = m.pending(10, |_| false).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p[0].ends_with("1.a"));
        let t = m.acknowledge(&p[0]).unwrap();
        assert!(t.ends_with("cur/1.a:2,S"));
        assert_eq!(m.pending(10, |_| false).unwrap().len(), 1);
        assert!(m.pending(10, |p| p.ends_with("2.b")).unwrap().is_empty());
    }

    #[test]
    fn delivered_at_is_the_file_time_else_the_name() {
        let d = tempfile::tempdir().unwrap();
        let m = Maildir::open(d.path()).unwrap();
        let f = m.new_dir().join("1700000000.M1P2.host");
        std::fs::write(&f, "x").unwrap();
        let past =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_764_000_000);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(past)
            .unwrap();
        assert_eq!(
            Maildir::delivered_at(&f),
            Some(jiff::Timestamp::from_second(1_764_000_000).unwrap())
        );
        // A file gone meanwhile: the name still tells.
        let gone = m.new_dir().join("1700000000.M9P9.host");
        assert_eq!(
            Maildir::delivered_at(&gone),
            Some(jiff::Timestamp::from_second(1_700_000_000).unwrap())
        );
        assert_eq!(Maildir::delivered_at(&m.new_dir().join("odd")), None);
    }
}
