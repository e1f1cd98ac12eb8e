//! Writing output files: atomically (a temporary file in the same folder, flushed and synced,
//! then renamed into place), so a killed run never leaves a half-written file behind.

use anyhow::{Context, Result};
use std::io::{BufWriter, Write};
use std::path::Path;

/// Writes `path` atomically: `write` fills a temporary file beside it, which is synced and
/// renamed over `path` only when everything succeeded; on an error it is removed, so a reader
/// sees the old file or the new one, never half of one.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> Result<()>,
) -> Result<()> {
    write_atomic_file(path, |file| {
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        w.flush()
            .with_context(|| format!("{}: write failed", path.display()))
    })
}

/// As [`write_atomic`], for writers that own their output (a streaming encoder): `write` gets
/// the temporary file itself.
pub fn write_atomic_file(
    path: &Path,
    write: impl FnOnce(std::fs::File) -> Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let file = std::fs::File::create(&tmp)
            .with_context(|| format!("{}: cannot create", tmp.display()))?;
        write(file)?;
        if let Ok(f) = std::fs::File::open(&tmp) {
            f.sync_all().ok();
        }
        std::fs::rename(&tmp, path)
            .with_context(|| format!("{}: cannot move into place", path.display()))
    })();
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result
}

/// Writes any serialisable value (a `serde_json::Value` too) as pretty JSON, atomically.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("serialising JSON")?;
    write_atomic(path, |w| {
        w.write_all(text.as_bytes())
            .with_context(|| format!("{}: write failed", path.display()))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_written_whole_and_no_temporary_is_left() {
        let dir = std::env::temp_dir().join(format!("segrs-io-{}", std::process::id()));
        let p = dir.join("sub").join("a.json");
        write_json(&p, &serde_json::json!({"x": [1, 2]})).unwrap();
        let back: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(back["x"][1], 2);
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
