//! The `LOG_FILE` writer: lines go to exactly the path configured, and the file is rotated once
//! a day, as logrotate would: the day's file is renamed `<name>.<YYYY-MM-DD>` (the UTC day its
//! lines were written) when the first line of a new day arrives, and the newest
//! [`KEEP_ROTATED`] of those are kept. So `grep .. /var/log/cognie-sync/app.log` finds today's
//! lines, and the disk does not fill. Give each process its own `LOG_FILE`: two processes
//! rotating one file would misdate a day's lines (never lose them: a rotated name that exists
//! is not overwritten).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use chrono::{DateTime, NaiveDate, Utc};

/// Rotated files kept besides the current one (two weeks).
pub const KEEP_ROTATED: usize = 14;

pub struct DailyFile {
    path: PathBuf,
    file: File,
    /// The UTC day of the lines in `file`.
    day: NaiveDate,
}

impl DailyFile {
    /// Opens `path` for appending; a file left from an earlier day is rotated first.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::open_on(path, today())
    }

    fn open_on(path: &Path, today: NaiveDate) -> io::Result<Self> {
        if let Ok(modified) = fs::metadata(path).and_then(|m| m.modified()) {
            let day = DateTime::<Utc>::from(modified).date_naive();
            if day < today {
                rotate(path, day)?;
            }
        }
        Ok(Self { path: path.to_owned(), file: open_append(path)?, day: today })
    }

    fn write_on(&mut self, buf: &[u8], today: NaiveDate) -> io::Result<usize> {
        if today != self.day {
            self.file.flush()?;
            rotate(&self.path, self.day)?;
            self.file = open_append(&self.path)?;
            self.day = today;
        }
        self.file.write(buf)
    }
}

impl Write for DailyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_on(buf, today())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Renames the file at `path` to `<name>.<day>` (`.<day>.<n>` if that exists), then deletes
/// the oldest rotated files beyond [`KEEP_ROTATED`].
///
/// A file already gone (deleted or moved by hand, or by another rotation) is nothing to
/// rotate, and a rotated file that cannot be deleted is left: either failing here would make
/// every later line retry the rotation and be dropped, so logging would stop for good.
fn rotate(path: &Path, day: NaiveDate) -> io::Result<()> {
    let base = format!("{}.{}", path.display(), day.format("%Y-%m-%d"));
    let mut target = PathBuf::from(&base);
    let mut n = 1;
    while target.exists() {
        target = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    match fs::rename(path, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Err(e) = prune(path) {
        // The log itself is the one place this could go: stderr, which the process keeps.
        eprintln!("{}: old log files could not be deleted: {e}", path.display());
    }
    Ok(())
}

fn prune(path: &Path) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    let prefix = format!("{name}.");
    let mut rotated: Vec<((NaiveDate, u32), String)> = fs::read_dir(dir)?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|file| Some((rotation_of(file.strip_prefix(&prefix)?)?, file)))
        .collect();
    // Oldest first: by day, then by n.
    rotated.sort();
    let excess = rotated.len().saturating_sub(KEEP_ROTATED);
    for (_, file) in &rotated[..excess] {
        fs::remove_file(dir.join(file))?;
    }
    Ok(())
}

/// The day and number of a rotated file's suffix (`YYYY-MM-DD`, or `YYYY-MM-DD.n`); `None`
/// for a name that is not a rotation.
fn rotation_of(suffix: &str) -> Option<(NaiveDate, u32)> {
    let (day, n) = match suffix.split_once('.') {
        Some((day, n)) => (day, n.parse().ok()?),
        None => (suffix, 0),
    };
    Some((NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn scratch_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cognie-log-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn writes_to_the_named_file_and_rotates_on_a_new_day() {
        let dir = scratch_dir();
        let path = dir.join("app.log");
        let mut log = DailyFile::open_on(&path, day("2026-12-05")).unwrap();
        log.write_on(b"first\n", day("2026-12-05")).unwrap();
        log.write_on(b"second\n", day("2026-12-05")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "first\nsecond\n");

        log.write_on(b"third\n", day("2026-12-06")).unwrap();
        assert_eq!(fs::read_to_string(dir.join("app.log.2026-12-05")).unwrap(), "first\nsecond\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "third\n");
        assert_eq!(files(&dir), ["app.log", "app.log.2026-12-05"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_log_file_deleted_during_the_day_does_not_stop_logging_at_midnight() {
        let dir = scratch_dir();
        let path = dir.join("app.log");
        let mut log = DailyFile::open_on(&path, day("2026-12-05")).unwrap();
        log.write_on(b"first\n", day("2026-12-05")).unwrap();
        fs::remove_file(&path).unwrap();

        log.write_on(b"second\n", day("2026-12-06")).unwrap();
        log.write_on(b"third\n", day("2026-12-06")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second\nthird\n");
        assert_eq!(files(&dir), ["app.log"]);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_from_an_earlier_day_is_rotated_at_start_and_nothing_is_overwritten() {
        let dir = scratch_dir();
        let path = dir.join("app.log");
        fs::write(&path, "yesterday\n").unwrap();
        let written = DateTime::<Utc>::from(fs::metadata(&path).unwrap().modified().unwrap()).date_naive();
        fs::write(dir.join(format!("app.log.{written}")), "already rotated\n").unwrap();

        let mut log = DailyFile::open_on(&path, written.succ_opt().unwrap()).unwrap();
        log.write_on(b"today\n", written.succ_opt().unwrap()).unwrap();
        assert_eq!(fs::read_to_string(dir.join(format!("app.log.{written}"))).unwrap(), "already rotated\n");
        assert_eq!(fs::read_to_string(dir.join(format!("app.log.{written}.1"))).unwrap(), "yesterday\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "today\n");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keeps_only_the_newest_rotated_files() {
        let dir = scratch_dir();
        let path = dir.join("app.log");
        fs::write(dir.join("other.txt"), "not ours").unwrap();
        fs::write(dir.join("app.log.notadate"), "not a rotation").unwrap();
        let mut log = DailyFile::open_on(&path, day("2026-11-01")).unwrap();
        for n in 1..=20u32 {
            let today = day("2026-11-01") + chrono::Days::new(n.into());
            log.write_on(format!("day {n}\n").as_bytes(), today).unwrap();
        }
        let names = files(&dir);
        let rotated: Vec<&String> = names.iter().filter(|f| f.starts_with("app.log.2026")).collect();
        assert_eq!(rotated.len(), KEEP_ROTATED);
        // The newest rotated file holds the day before the current one; the oldest kept is 14
        // days before that.
        assert_eq!(rotated.first().unwrap().as_str(), "app.log.2026-11-07");
        assert_eq!(rotated.last().unwrap().as_str(), "app.log.2026-11-20");
        assert!(names.contains(&"other.txt".to_owned()) && names.contains(&"app.log.notadate".to_owned()));
        assert_eq!(fs::read_to_string(&path).unwrap(), "day 20\n");
        fs::remove_dir_all(dir).unwrap();
    }
}
