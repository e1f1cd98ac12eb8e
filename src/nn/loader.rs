//! The one weight loader: a view of a checkpoint's named tensors scoped by a key prefix, as
//! candle's `VarBuilder`. `w.pp("image_encoder").pp("blocks.3")` reads
//! `image_encoder.blocks.3.*`; every missing or misshapen tensor is recorded under its full
//! name, and [`Weights::finish`] reports all of them at once, naming the file.

use crate::ops::Precision;
use crate::weights::{KeyCheck, NamedTensors};
use anyhow::Result;
use std::cell::RefCell;
use std::fmt::Display;
use std::rc::Rc;

/// Named tensors under a prefix, and the precision the layers built from them compute in;
/// clones share the record of key problems.
#[derive(Clone)]
pub struct Weights<'a> {
    src: &'a NamedTensors,
    prefix: String,
    check: Rc<RefCell<KeyCheck>>,
    precision: Precision,
}

impl<'a> Weights<'a> {
    /// The whole checkpoint.
    pub fn new(src: &'a NamedTensors) -> Self {
        Self {
            src,
            prefix: String::new(),
            check: Rc::default(),
            precision: Precision::F32,
        }
    }

    /// The same tensors, for layers that compute in `precision` (dense layers and dense
    /// convolutions convert their weights once, as they load).
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }

    /// What the layers built from these tensors compute in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The tensors under `name.` (a `.`-free name, a dotted path, or a block index).
    pub fn pp(&self, name: impl Display) -> Self {
        Self {
            src: self.src,
            prefix: format!("{}{name}.", self.prefix),
            check: self.check.clone(),
            precision: self.precision,
        }
    }

    /// The full key of `name` here.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Where the tensors came from (for error messages).
    pub fn source(&self) -> &str {
        &self.src.source
    }

    /// The shape of `name`, without recording anything.
    pub fn shape(&self, name: &str) -> Option<&'a [usize]> {
        self.src.get(&self.key(name)).map(|t| t.shape.as_slice())
    }

    /// Size `i` of `name`'s shape, when the tensor exists and has that many dimensions.
    pub fn dim(&self, name: &str, i: usize) -> Option<usize> {
        self.shape(name).and_then(|s| s.get(i).copied())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }

    /// How many numbered blocks `name.{i}.*` there are (one past the highest index); an empty
    /// `name` counts the blocks `{i}.*` right under this scope.
    pub fn count_blocks(&self, name: &str) -> usize {
        if name.is_empty() {
            self.src.count_blocks(&self.prefix)
        } else {
            self.src.count_blocks(&format!("{}.", self.key(name)))
        }
    }

    /// The values of `name`, which must have `shape`; when it is missing or misshapen the
    /// problem is recorded and zeros stand in (the load then fails at [`finish`](Self::finish)).
    pub fn get(&self, name: &str, shape: &[usize]) -> Vec<f32> {
        let key = self.key(name);
        self.check
            .borrow_mut()
            .take(self.src, &key, shape)
            .map(|t| t.data.clone())
            .unwrap_or_else(|| vec![0.0; shape.iter().product()])
    }

    /// Like [`get`](Self::get) for a tensor a model may lack (an optional bias): `None` when
    /// absent, recorded when present with the wrong shape.
    pub fn get_opt(&self, name: &str, shape: &[usize]) -> Option<Vec<f32>> {
        self.contains(name).then(|| self.get(name, shape))
    }

    /// Fails with every missing and misshapen key seen by this loader and its scopes (the
    /// record of keys used is kept, for [`unused`](Self::unused)).
    pub fn finish(&self, model: &str) -> Result<()> {
        let mut c = self.check.borrow_mut();
        let problems = KeyCheck {
            missing: std::mem::take(&mut c.missing),
            misshapen: std::mem::take(&mut c.misshapen),
            used: Default::default(),
        };
        problems.finish(self.src, model)
    }

    /// The checkpoint's keys that no scope of this loader has taken, leaving out those under
    /// `known` prefixes (parts a model holds but does not run).
    pub fn unused(&self, known: &[&str]) -> Vec<String> {
        let c = self.check.borrow();
        self.src
            .tensors
            .keys()
            .filter(|k| !c.used.contains(*k) && !known.iter().any(|p| k.starts_with(p)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::HostTensor;

    #[test]
    fn scopes_and_reports_full_names() {
        let mut n = NamedTensors {
            source: "ck.pth".into(),
            ..Default::default()
        };
        n.insert(
            "enc.blocks.0.weight",
            HostTensor::new(vec![2], vec![1.0, 2.0]),
        );
        n.insert(
            "enc.blocks.1.weight",
            HostTensor::new(vec![3], vec![0.0; 3]),
        );
        let w = Weights::new(&n).pp("enc");
        assert_eq!(w.count_blocks("blocks"), 2);
        assert_eq!(w.pp("blocks").pp(0).get("weight", &[2]), vec![1.0, 2.0]);
        assert!(w.pp("blocks").pp(0).get_opt("bias", &[2]).is_none());
        w.pp("blocks.1").get("weight", &[2]);
        w.pp("blocks.2").get("weight", &[2]);
        let e = w.finish("test model").unwrap_err().to_string();
        assert!(e.contains("ck.pth"), "{e}");
        assert!(
            e.contains("enc.blocks.1.weight: expected [2], file has [3]"),
            "{e}"
        );
        assert!(e.contains("enc.blocks.2.weight"), "{e}");
    }
}
