//! Splitting a folder's work over machines: shard `i` of `n` takes every `n`-th item starting at
//! `i`, so shards are disjoint, cover everything, and keep the folder's order. The shard comes from
//! the command line or, for array jobs, from the scheduler's environment (Slurm job arrays,
//! Kubernetes Indexed Jobs).

use anyhow::{Result, bail};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole list.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `I/N` with `0 <= I < N`.
    pub fn parse(s: &str) -> Result<Self> {
        let Some((i, n)) = s.split_once('/') else {
            bail!("--shard {s:?}: expected I/N, e.g. 0/4");
        };
        let (Ok(index), Ok(count)) = (i.trim().parse::<usize>(), n.trim().parse::<usize>()) else {
            bail!("--shard {s:?}: I and N must be whole numbers");
        };
        Self::new(index, count)
    }

    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            bail!("shard {index}/{count}: need 0 <= index < count");
        }
        Ok(Self { index, count })
    }

    /// The shard of an array job, from `env` (a lookup such as `std::env::var`): Slurm's
    /// `(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP` of
    /// `SLURM_ARRAY_TASK_COUNT`, or Kubernetes'
    /// `JOB_COMPLETION_INDEX` of `count` (which the Indexed Job's `completions` sets and the
    /// pod does not see). `None` when neither is set.
    pub fn from_env(
        env: impl Fn(&str) -> Option<String>,
        count: Option<usize>,
    ) -> Result<Option<Self>> {
        let num = |k: &str| -> Result<Option<usize>> {
            match env(k) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<usize>() {
                    Ok(n) => Ok(Some(n)),
                    Err(_) => bail!("{k}={v:?} is not a whole number"),
                },
            }
        };
        if let (Some(id), Some(n)) = (num("SLURM_ARRAY_TASK_ID")?, num("SLURM_ARRAY_TASK_COUNT")?) {
            let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
            let Some(offset) = id.checked_sub(min) else {
                bail!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}");
            };
            // `--array=0-6:2` runs ids 0, 2, 4, 6: shards 0-3 of 4.
            return Ok(Some(Self::new(offset / step, n)?));
        }
        if let Some(index) = num("JOB_COMPLETION_INDEX")? {
            let Some(n) = count else {
                bail!("JOB_COMPLETION_INDEX is set: give the number of shards with --shards N");
            };
            return Ok(Some(Self::new(index, n)?));
        }
        Ok(None)
    }

    /// This shard's items of `items`, in order.
    pub fn select<T>(&self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % self.count == self.index)
            .map(|(_, t)| t)
            .collect()
    }

    /// A suffix for this shard's output files (`-2-of-8`), empty for the whole list.
    pub fn suffix(&self) -> String {
        if self.count == 1 {
            String::new()
        } else {
            format!("-{}-of-{}", self.index, self.count)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_in_order() {
        let all: Vec<usize> = (0..10).collect();
        let mut seen = Vec::new();
        for i in 0..3 {
            let s = Shard::parse(&format!("{i}/3")).unwrap();
            let part = s.select(all.clone());
            assert!(part.windows(2).all(|w| w[0] < w[1]));
            seen.extend(part);
        }
        seen.sort();
        assert_eq!(seen, all);
        assert!(
            Shard::parse("3/3").is_err()
                && Shard::parse("a/2").is_err()
                && Shard::parse("1").is_err()
        );
    }

    #[test]
    fn array_job_environments() {
        let slurm = |k: &str| match k {
            "SLURM_ARRAY_TASK_ID" => Some("5".into()),
            "SLURM_ARRAY_TASK_MIN" => Some("1".into()),
            "SLURM_ARRAY_TASK_COUNT" => Some("8".into()),
            _ => None,
        };
        assert_eq!(
            Shard::from_env(slurm, None).unwrap(),
            Some(Shard::new(4, 8).unwrap())
        );
        let k8s = |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| "2".to_string());
        assert_eq!(
            Shard::from_env(k8s, Some(4)).unwrap(),
            Some(Shard::new(2, 4).unwrap())
        );
        assert!(Shard::from_env(k8s, None).is_err());
        assert_eq!(Shard::from_env(|_| None, Some(4)).unwrap(), None);
    }
}
