//! The safetensors format: an 8-byte little-endian header length, a JSON header of
//! `{name: {dtype, shape, data_offsets}}` (plus `__metadata__`), then the raw data.

use super::{HostTensor, NamedTensors};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

/// True when the file starts with a plausible safetensors header.
pub fn looks_like_safetensors(path: &Path) -> Result<bool> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut head = [0u8; 9];
    if f.read(&mut head)? < 9 {
        return Ok(false);
    }
    let n = u64::from_le_bytes(head[..8].try_into().unwrap());
    let len = f.metadata()?.len();
    Ok(n > 1 && n + 8 <= len && head[8] == b'{')
}

fn to_f32(path: &Path, name: &str, dtype: &str, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        "F32" => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        "F64" => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        "F16" => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        "BF16" => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        "I64" => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        "I32" => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        "U8" | "BOOL" => bytes.iter().map(|&b| b as f32).collect(),
        other => bail!(
            "{}: tensor {name} has unsupported dtype {other}",
            path.display()
        ),
    })
}

fn dtype_size(dtype: &str) -> usize {
    match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        _ => 1,
    }
}

pub fn read(path: &Path) -> Result<NamedTensors> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    if bytes.len() < 8 {
        bail!("{}: truncated safetensors file", path.display());
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    if 8 + n > bytes.len() {
        bail!(
            "{}: truncated safetensors header ({} bytes announced, {} in the file)",
            path.display(),
            n,
            bytes.len() - 8
        );
    }
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n])
        .with_context(|| format!("{}: malformed safetensors header", path.display()))?;
    let obj = header
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("{}: header is not a JSON object", path.display()))?;
    let data = &bytes[8 + n..];
    let mut out = NamedTensors {
        source: path.display().to_string(),
        ..Default::default()
    };
    for (name, v) in obj {
        if name == "__metadata__" {
            if let Some(m) = v.as_object() {
                for (k, s) in m {
                    out.metadata
                        .insert(k.clone(), s.as_str().unwrap_or_default().to_string());
                }
            }
            continue;
        }
        let bad = || {
            anyhow::anyhow!(
                "{}: malformed header entry for tensor {name}",
                path.display()
            )
        };
        let dtype = v.get("dtype").and_then(|d| d.as_str()).ok_or_else(bad)?;
        let shape: Vec<usize> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(bad)?
            .iter()
            .map(|x| x.as_u64().map(|x| x as usize).ok_or_else(bad))
            .collect::<Result<_>>()?;
        let offs = v
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .ok_or_else(bad)?;
        let (b, e) = match offs.as_slice() {
            [b, e] => (
                b.as_u64().ok_or_else(bad)? as usize,
                e.as_u64().ok_or_else(bad)? as usize,
            ),
            _ => return Err(bad()),
        };
        let numel: usize = shape.iter().product();
        if b > e || e > data.len() || e - b != numel * dtype_size(dtype) {
            bail!(
                "{}: tensor {name} has data offsets [{b}, {e}] that do not fit its shape {shape:?} / the file",
                path.display()
            );
        }
        let values = to_f32(path, name, dtype, &data[b..e])?;
        out.tensors.insert(
            name.clone(),
            HostTensor {
                shape,
                data: values,
            },
        );
    }
    Ok(out)
}

/// Writes f32 tensors and string metadata, atomically.
pub fn write(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        let len = t.data.len() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut head = serde_json::to_vec(&serde_json::Value::Object(header))?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    crate::io::write_atomic(path, |w| {
        w.write_all(&(head.len() as u64).to_le_bytes())?;
        w.write_all(&head)?;
        for t in tensors.values() {
            let mut buf = Vec::with_capacity(t.data.len() * 4);
            for v in &t.data {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata() {
        let dir = std::env::temp_dir().join(format!("segrs-st-{}", std::process::id()));
        let p = dir.join("w.safetensors");
        let mut t = BTreeMap::new();
        t.insert(
            "a.weight".to_string(),
            HostTensor::new(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]),
        );
        t.insert("b".to_string(), HostTensor::new(vec![1], vec![-0.5]));
        let mut m = BTreeMap::new();
        m.insert("segrs".to_string(), "{\"x\":1}".to_string());
        write(&p, &t, &m).unwrap();
        assert!(looks_like_safetensors(&p).unwrap());
        let r = read(&p).unwrap();
        assert_eq!(r.tensors, t);
        assert_eq!(r.metadata, m);
        // truncation is reported, not a panic
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        let err = format!("{:#}", read(&p).unwrap_err());
        assert!(err.contains("w.safetensors"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
