//! Weight files: named host tensors read from PyTorch `.pth` / `.pt` files and safetensors, and
//! written as safetensors (segrs' own checkpoint format, with PyTorch key names).
//!
//! Models turn a [`NamedTensors`] map into modules (and back) with their own key names, so one
//! loader serves official PyTorch checkpoints and segrs checkpoints alike.

pub mod pth;
pub mod safetensors;

use anyhow::{Result, bail};
use std::collections::BTreeMap;
use std::path::Path;

/// A tensor on the host: shape and f32 values (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape and data length differ"
        );
        Self { shape, data }
    }
}

/// Tensors by key, plus free-form string metadata (safetensors `__metadata__`).
#[derive(Clone, Debug, Default)]
pub struct NamedTensors {
    pub tensors: BTreeMap<String, HostTensor>,
    pub metadata: BTreeMap<String, String>,
    /// Where they came from, for error messages.
    pub source: String,
}

impl NamedTensors {
    /// Reads a weight file, by content: safetensors, or a PyTorch zip / legacy pickle file.
    /// Common wrappers are unwrapped: a top-level `state_dict` / `model` entry and a `module.`
    /// prefix (DataParallel).
    pub fn read(path: &Path) -> Result<Self> {
        let mut head = [0u8; 8];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path)
                .map_err(|e| anyhow::anyhow!("{}: cannot open checkpoint: {e}", path.display()))?;
            let n = f.read(&mut head).unwrap_or(0);
            if n < 8 {
                bail!(
                    "{}: file too short to be a checkpoint ({} bytes)",
                    path.display(),
                    n
                );
            }
        }
        let mut named = if safetensors::looks_like_safetensors(path)? {
            safetensors::read(path)?
        } else {
            pth::read(path)?
        };
        named.strip_wrappers();
        Ok(named)
    }

    fn strip_wrappers(&mut self) {
        for prefix in ["state_dict.", "model.", "module."] {
            if !self.tensors.is_empty() && self.tensors.keys().all(|k| k.starts_with(prefix)) {
                self.tensors = std::mem::take(&mut self.tensors)
                    .into_iter()
                    .map(|(k, v)| (k[prefix.len()..].to_string(), v))
                    .collect();
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&HostTensor> {
        self.tensors.get(key)
    }

    /// How many numbered blocks live under `prefix` (keys `{prefix}{i}.…`): one past the
    /// highest index, so that a missing key inside the range is reported as missing rather than
    /// taken for a shallower model.
    pub fn count_blocks(&self, prefix: &str) -> usize {
        self.tensors
            .keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter_map(|r| r.split('.').next()?.parse::<usize>().ok())
            .map(|i| i + 1)
            .max()
            .unwrap_or(0)
    }

    pub fn insert(&mut self, key: impl Into<String>, t: HostTensor) {
        self.tensors.insert(key.into(), t);
    }
}

/// Collects key problems while a model takes its tensors, so one error lists all of them.
#[derive(Default)]
pub struct KeyCheck {
    pub missing: Vec<String>,
    pub misshapen: Vec<String>,
    pub used: std::collections::BTreeSet<String>,
}

impl KeyCheck {
    /// The tensor under `key` if present with `shape`; otherwise records the problem.
    pub fn take<'a>(
        &mut self,
        src: &'a NamedTensors,
        key: &str,
        shape: &[usize],
    ) -> Option<&'a HostTensor> {
        match src.get(key) {
            None => {
                self.missing.push(format!("{key} {shape:?}"));
                None
            }
            Some(t) if t.shape != shape => {
                self.misshapen
                    .push(format!("{key}: expected {shape:?}, file has {:?}", t.shape));
                None
            }
            Some(t) => {
                self.used.insert(key.to_string());
                Some(t)
            }
        }
    }

    /// Fails with every missing and misshapen key, naming the file and the model.
    pub fn finish(self, src: &NamedTensors, model: &str) -> Result<()> {
        if self.missing.is_empty() && self.misshapen.is_empty() {
            return Ok(());
        }
        let mut msg = format!("{}: not a matching {model} checkpoint", src.source);
        let show = |v: &[String]| {
            let mut s: Vec<String> = v.iter().take(12).cloned().collect();
            if v.len() > 12 {
                s.push(format!("... and {} more", v.len() - 12));
            }
            s.join("\n    ")
        };
        if !self.misshapen.is_empty() {
            msg += &format!(
                "\n  {} tensor(s) with the wrong shape:\n    {}",
                self.misshapen.len(),
                show(&self.misshapen)
            );
        }
        if !self.missing.is_empty() {
            msg += &format!(
                "\n  {} missing key(s):\n    {}",
                self.missing.len(),
                show(&self.missing)
            );
            let sample: Vec<&String> = src.tensors.keys().take(5).collect();
            msg += &format!("\n  the file's first keys: {sample:?}");
        }
        bail!(msg)
    }
}
