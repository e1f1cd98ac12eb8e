//! PyTorch checkpoints (`torch.save` zip files and legacy pickles), read with burn's pickle reader.

use super::{HostTensor, NamedTensors};
use anyhow::{Result, bail};
use burn::store::pytorch_reader::{DType, PytorchReader};
use std::path::Path;

fn convert(name: &str, dtype: DType, bytes: &[u8], path: &Path) -> Result<Vec<f32>> {
    Ok(match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_ne_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_ne_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_ne_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_ne_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        DType::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        DType::U8 | DType::Bool => bytes.iter().map(|&b| b as f32).collect(),
        other => bail!(
            "{}: tensor {name} has unsupported dtype {other:?}",
            path.display()
        ),
    })
}

pub fn read(path: &Path) -> Result<NamedTensors> {
    let reader = PytorchReader::new(path).map_err(|e| {
        anyhow::anyhow!("{}: not a readable PyTorch checkpoint: {e}", path.display())
    })?;
    let mut out = NamedTensors {
        source: path.display().to_string(),
        ..Default::default()
    };
    for (name, t) in reader.tensors() {
        let bytes = t.read().map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot read tensor {name} (truncated file?): {e}",
                path.display()
            )
        })?;
        let data = convert(name, t.dtype(), &bytes, path)?;
        if data.len() != t.shape().iter().product::<usize>() {
            bail!(
                "{}: tensor {name} holds {} values for shape {:?}",
                path.display(),
                data.len(),
                t.shape()
            );
        }
        out.tensors.insert(
            name.clone(),
            HostTensor {
                shape: t.shape().to_vec(),
                data,
            },
        );
    }
    if out.tensors.is_empty() {
        bail!("{}: the checkpoint holds no tensors", path.display());
    }
    Ok(out)
}
