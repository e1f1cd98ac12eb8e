//! U-Net parity with PyTorch (fixtures from tools/gen_unet_fixtures.py): state_dicts saved by
//! `torch.save(model.state_dict())` load directly and give the same eval-mode logits within
//! 1e-4 relative L2 error: burn plain, burn with BatchNorm folded, and the host engine.

use crate::common::{fixtures, read_fixture, rel_l2};
use burn::prelude::*;
use segrs::models::tensor_io::{from_host, to_vec};
use segrs::models::unet::UNetConfig;
use segrs::models::unet::checkpoint;
use segrs::models::unet::host::HostUNet;
use segrs::models::unet::state_dict;
use segrs::ops::Precision;
use segrs::weights::NamedTensors;

const TOL: f64 = 1e-4;

fn check(name: &str) {
    let io = read_fixture("unet/io.safetensors");
    let dev = Device::flex();
    let path = fixtures().join("unet").join(format!("{name}.pth"));
    let loaded = checkpoint::load(&path, (None, None), &dev).unwrap();
    assert!(loaded.meta.is_none());
    let x = io.get(&format!("{name}.input")).unwrap();
    let want = io.get(&format!("{name}.logits")).unwrap();
    let model = loaded.model.valid();
    let got = to_vec(model.forward(from_host::<4>(x, &dev)));
    let err = rel_l2(&got, &want.data);
    assert!(err < TOL, "{name}: relative L2 error {err:e}");
    let folded = model.fold_batchnorm();
    let got = to_vec(folded.forward(from_host::<4>(x, &dev)));
    let err = rel_l2(&got, &want.data);
    assert!(
        err < TOL,
        "{name} (BatchNorm folded): relative L2 error {err:e}"
    );
    // The host engine, built straight from the file's named tensors.
    let named = NamedTensors::read(&path).unwrap();
    let config = state_dict::infer_config(&named).unwrap();
    let host = HostUNet::from_tensors(&config, &named).unwrap();
    let (per, h, w) = (x.shape[1] * x.shape[2] * x.shape[3], x.shape[2], x.shape[3]);
    let batch = |net: &HostUNet| -> Vec<f32> {
        x.data
            .chunks(per)
            .flat_map(|img| net.forward(img, h, w).unwrap())
            .collect()
    };
    let err = rel_l2(&batch(&host), &want.data);
    assert!(err < TOL, "{name} (host engine): relative L2 error {err:e}");
    // ... and from the burn network.
    let got = batch(&HostUNet::from_model(&loaded.model).unwrap());
    let err = rel_l2(&got, &want.data);
    assert!(
        err < TOL,
        "{name} (host engine from burn): relative L2 error {err:e}"
    );
    // bf16 convolutions (the portable kernel where the CPU lacks AVX512_BF16): the logits
    // within bf16's rounding of PyTorch's, the classes of nearly every pixel the same.
    let bf16 = HostUNet::from_tensors_with(&config, &named, Precision::Bf16).unwrap();
    let got = batch(&bf16);
    let err = rel_l2(&got, &want.data);
    let classes = want.shape[1];
    let agree = argmax_agreement(&got, &want.data, classes, h * w);
    eprintln!("{name} bf16: relative L2 {err:e}, argmax agreement {agree}");
    assert!(err < BF16_TOL, "{name} (bf16): relative L2 error {err:e}");
    // that is bf16's error, not f32's (tiny_nobn's last ReLUs are all zero: its logits are
    // the head's biases, the same in any precision)
    let f32_exact = rel_l2(&batch(&host), &want.data) == 0.0;
    assert!(
        f32_exact || err > 1e-5,
        "{name}: bf16 logits as exact as f32's ({err:e})"
    );
    assert!(agree >= 0.99, "{name} (bf16): classes agree on {agree}");
}

/// Logits' relative L2 error in bf16: 8 significant bits per operand, sums in f32.
const BF16_TOL: f64 = 2e-2;

/// The fraction of pixels whose highest logit is the same class in `a` and `b` (`[n, classes,
/// hw]` each).
fn argmax_agreement(a: &[f32], b: &[f32], classes: usize, hw: usize) -> f64 {
    let argmax = |x: &[f32], img: usize, p: usize| {
        (0..classes)
            .max_by(|&i, &j| {
                x[(img * classes + i) * hw + p].total_cmp(&x[(img * classes + j) * hw + p])
            })
            .unwrap()
    };
    let images = a.len() / (classes * hw);
    let same = (0..images)
        .flat_map(|i| (0..hw).map(move |p| (i, p)))
        .filter(|&(i, p)| argmax(a, i, p) == argmax(b, i, p))
        .count();
    same as f64 / (images * hw) as f64
}

#[test]
fn tiny_transpose_matches_pytorch() {
    check("tiny_transpose");
}

#[test]
fn tiny_bilinear_matches_pytorch() {
    check("tiny_bilinear");
}

#[test]
fn tiny_without_batchnorm_matches_pytorch() {
    check("tiny_nobn");
}

#[test]
fn architecture_is_read_from_the_keys() {
    let named =
        segrs::weights::NamedTensors::read(&fixtures().join("unet/tiny_bilinear.pth")).unwrap();
    let cfg = segrs::models::unet::state_dict::infer_config(&named).unwrap();
    assert_eq!(
        cfg,
        UNetConfig {
            in_channels: 1,
            num_classes: 3,
            base_width: 4,
            depth: 2,
            upsampling: segrs::models::unet::Upsampling::Bilinear,
            batch_norm: true
        }
    );
}

#[test]
fn classic_network_has_the_pytorch_parameter_count_and_keys() {
    let cfg = UNetConfig::classic(3, 21);
    assert_eq!(cfg.num_trainable_params(), 31_044_821);
    let dev = Device::flex();
    let model = segrs::models::unet::UNet::new(&cfg, &dev);
    let sd = segrs::models::unet::state_dict::export(&model);
    let trainable: usize = sd
        .iter()
        .filter(|(k, _)| {
            !k.ends_with("running_mean")
                && !k.ends_with("running_var")
                && !k.ends_with("num_batches_tracked")
        })
        .map(|(_, t)| t.data.len())
        .sum();
    assert_eq!(trainable, 31_044_821);
    for k in [
        "enc1.block.0.weight",
        "enc1.block.1.running_mean",
        "up4.weight",
        "dec1.block.4.bias",
        "out_conv.bias",
    ] {
        assert!(sd.contains_key(k), "missing {k}");
    }
    assert_eq!(sd["up4.weight"].shape, vec![1024, 512, 2, 2]);
}

#[test]
fn segrs_checkpoint_round_trips() {
    let dev = Device::flex();
    let src = checkpoint::load(
        &fixtures().join("unet/tiny_transpose.pth"),
        (None, None),
        &dev,
    )
    .unwrap();
    let dir = crate::common::tmp("ckpt");
    let meta = checkpoint::CheckpointMeta {
        format: checkpoint::FORMAT.into(),
        unet: src.model.config.clone(),
        normalize: segrs::data::preprocess::Normalize::default(),
        ignore_index: Some(255),
        binary: false,
        class_names: vec![],
        epoch: 3,
        labels: segrs::data::labels::LabelConvention {
            reduce_zero_label: true,
            ..Default::default()
        },
    };
    let p = dir.join("m.safetensors");
    checkpoint::save(&p, &src.model, &meta).unwrap();
    let back = checkpoint::load(&p, (Some(3), Some(5)), &dev).unwrap();
    assert_eq!(back.meta.as_ref(), Some(&meta));
    let a = segrs::models::unet::state_dict::export(&src.model);
    let b = segrs::models::unet::state_dict::export(&back.model);
    assert_eq!(a, b);
}

#[test]
fn wrong_checkpoints_get_clear_errors() {
    let dev = Device::flex();
    let p = fixtures().join("unet/tiny_transpose.pth");
    let err = format!(
        "{:#}",
        checkpoint::load(&p, (None, Some(21)), &dev).err().unwrap()
    );
    assert!(
        err.contains("5 classes") && err.contains("tiny_transpose.pth"),
        "{err}"
    );
    // a state_dict with a misshapen tensor and a missing key
    let mut named = segrs::weights::NamedTensors::read(&p).unwrap();
    named.tensors.remove("dec1.block.0.weight");
    let w = named.tensors.get_mut("enc2.block.0.weight").unwrap();
    w.shape = vec![w.data.len()];
    let dir = crate::common::tmp("badckpt");
    let bad = dir.join("bad.safetensors");
    segrs::weights::safetensors::write(&bad, &named.tensors, &Default::default()).unwrap();
    let err = format!(
        "{:#}",
        checkpoint::load(&bad, (None, None), &dev).err().unwrap()
    );
    assert!(
        err.contains("dec1.block.0.weight")
            && err.contains("enc2.block.0.weight")
            && err.contains("bad.safetensors"),
        "{err}"
    );
    // not a checkpoint at all
    let junk = dir.join("junk.pth");
    std::fs::write(&junk, b"this is not a checkpoint at all").unwrap();
    let err = format!(
        "{:#}",
        checkpoint::load(&junk, (None, None), &dev).err().unwrap()
    );
    assert!(err.contains("junk.pth"), "{err}");
    // truncated zip
    let bytes = std::fs::read(&p).unwrap();
    let trunc = dir.join("trunc.pth");
    std::fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!(
        "{:#}",
        checkpoint::load(&trunc, (None, None), &dev).err().unwrap()
    );
    assert!(err.contains("trunc.pth"), "{err}");
}

#[test]
fn overlap_tile_logits_equal_whole_image_logits_on_isbi() {
    use segrs::predict::{Engine, SemanticPredictor, Tiling};
    let Some(isbi) = crate::common::shared_data("isbi2012_membrane") else {
        return;
    };
    let dev = burn::prelude::Device::flex();
    let loaded = segrs::models::unet::checkpoint::load(
        &fixtures().join("unet/tiny_bilinear.pth"),
        (None, None),
        &dev,
    )
    .unwrap();
    let p = SemanticPredictor::new(
        &loaded.model,
        segrs::data::preprocess::Normalize::new(vec![0.5], vec![0.2]).unwrap(),
        Engine::Host(segrs::ops::Precision::F32),
    )
    .unwrap();
    let pic = segrs::data::image_io::read_image(&isbi.join("train/image/25.png")).unwrap();
    let whole = p.host_logits(&pic).unwrap();
    let none = |_: usize, _: usize| {};
    // One tile covering the image: the same computation, bit for bit.
    let one = p
        .tiled_logits(
            &pic,
            Tiling {
                tile: 512,
                overlap: 0,
            },
            &none,
        )
        .unwrap();
    assert_eq!(one, whole);
    // 3 x 3 tiles of 192 px: the blended logits against the whole image's, per class, relative
    // to how much the logits vary over the image.
    let tiled = p
        .tiled_logits(
            &pic,
            Tiling {
                tile: 192,
                overlap: 48,
            },
            &none,
        )
        .unwrap();
    let hw = 512 * 512;
    for c in 0..3 {
        let (w, t) = (&whole[c * hw..(c + 1) * hw], &tiled[c * hw..(c + 1) * hw]);
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / hw as f64;
        let std = (w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / hw as f64).sqrt();
        let worst = w
            .iter()
            .zip(t)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        let close = w
            .iter()
            .zip(t)
            .filter(|(a, b)| ((**a - **b).abs() as f64) < 1e-3 * std)
            .count();
        eprintln!(
            "class {c}: logit std {std:.4}, worst difference {worst:.5}, within 1e-3 std: {close}/{hw}"
        );
        assert!(std > 1e-3, "the logits vary over the image");
        assert!(
            worst < 0.05 * std,
            "class {c}: {worst} against a spread of {std}"
        );
        assert!(close as f64 >= 0.99 * hw as f64);
    }
}

#[test]
fn predict_tile_flags_from_the_cli() {
    use crate::common::{segrs, shared_data, tmp};
    let Some(isbi) = shared_data("isbi2012_membrane") else {
        return;
    };
    let d = tmp("tiled-predict");
    let ck = fixtures().join("unet/tiny_bilinear.pth");
    let images = isbi.join("train/image");
    let run = |name: &str, extra: &[&str]| {
        let out = d.join(name);
        let mut args = vec![
            "predict",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--images",
            images.to_str().unwrap(),
            "--stems",
            "25-26",
            "--out",
        ];
        let o = out.to_str().unwrap().to_string();
        args.push(&o);
        args.extend_from_slice(extra);
        let (code, so, se) = segrs(&args);
        assert_eq!(code, 0, "{so}{se}");
        ["25", "26"].map(|s| {
            segrs::data::image_io::read_mask(&out.join(format!("{s}.png")))
                .unwrap()
                .data
        })
    };
    let whole = run("whole", &[]);
    // One tile covering the image: the same computation.
    assert_eq!(run("one", &["--tile", "512"]), whole);
    // 3 x 3 tiles of 192 px overlapping by 32-48 px.
    let tiled = run("tiled", &["--tile", "192", "--overlap", "48"]);
    for (t, w) in tiled.iter().zip(&whole) {
        let same = t.iter().zip(w).filter(|(a, b)| a == b).count() as f64 / t.len() as f64;
        eprintln!("tiled vs whole: {:.5}", same);
        assert!(
            same >= 0.9999,
            "tiled prediction agrees on {same} of the pixels"
        );
    }
    // A tile larger than the image: mirrored out to it, still the image's size.
    let big = run("big", &["--tile", "640", "--overlap", "0"]);
    assert_eq!(big[0].len(), 512 * 512);
    let (code, _, se) = segrs(&[
        "predict",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--images",
        isbi.join("train/image").to_str().unwrap(),
        "--stems",
        "25",
        "--out",
        d.join("bad").to_str().unwrap(),
        "--tile",
        "128",
        "--overlap",
        "64",
    ]);
    assert_ne!(code, 0);
    assert!(se.contains("less than half the tile"), "{se}");
}

/// A 16-bit gray BigTIFF in 64x64 tiles (uncompressed), written field by field as TIFF 6.0 and
/// the BigTIFF note lay it out.
fn write_tiled_bigtiff(path: &std::path::Path, w: usize, h: usize, px: &[u16]) {
    const T: usize = 64;
    let (across, down) = (w.div_ceil(T), h.div_ceil(T));
    let n = across * down;
    let mut file = Vec::new();
    file.extend_from_slice(b"II");
    file.extend_from_slice(&43u16.to_le_bytes());
    file.extend_from_slice(&8u16.to_le_bytes());
    file.extend_from_slice(&0u16.to_le_bytes());
    file.extend_from_slice(&0u64.to_le_bytes()); // IFD offset, patched below
    let mut offsets = Vec::new();
    for ty in 0..down {
        for tx in 0..across {
            offsets.push(file.len() as u64);
            for y in ty * T..(ty + 1) * T {
                for x in tx * T..(tx + 1) * T {
                    let v = if y < h && x < w { px[y * w + x] } else { 0 };
                    file.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    let counts = vec![(T * T * 2) as u64; n];
    let arrays = file.len() as u64;
    for v in offsets.iter().chain(&counts) {
        file.extend_from_slice(&v.to_le_bytes());
    }
    let ifd = file.len() as u64;
    file[8..16].copy_from_slice(&ifd.to_le_bytes());
    // (tag, type, count, value): SHORT 3, LONG 4, LONG8 16
    let entries: [(u16, u16, u64, u64); 13] = [
        (256, 4, 1, w as u64),
        (257, 4, 1, h as u64),
        (258, 3, 1, 16),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (277, 3, 1, 1),
        (284, 3, 1, 1),
        (322, 4, 1, T as u64),
        (323, 4, 1, T as u64),
        (324, 16, n as u64, arrays),
        (325, 16, n as u64, arrays + 8 * n as u64),
        (339, 3, 1, 1),
        (0, 0, 0, 0),
    ];
    let entries = &entries[..12];
    file.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for &(tag, ty, count, value) in entries {
        file.extend_from_slice(&tag.to_le_bytes());
        file.extend_from_slice(&ty.to_le_bytes());
        file.extend_from_slice(&count.to_le_bytes());
        file.extend_from_slice(&value.to_le_bytes());
    }
    file.extend_from_slice(&0u64.to_le_bytes());
    std::fs::write(path, file).unwrap();
}

/// Overlap-tile prediction streaming rows from a 16-bit PNG, a striped 8-bit RGB TIFF and a
/// tiled 16-bit BigTIFF gives exactly the labels of the same prediction on the decoded picture;
/// `segrs predict --tile` streams the BigTIFF to the same label PNG.
#[test]
fn overlap_tile_prediction_streams_png_and_tiff_rows() {
    use segrs::data::image_io::{read_image, read_mask};
    use segrs::data::rows::open_rows;
    use segrs::predict::{Engine, SemanticPredictor, Tiling, argmax_row};
    let Some(isbi) = crate::common::shared_data("isbi2012_membrane") else {
        return;
    };
    let d = crate::common::tmp("tiled-rows");
    let full = read_image(&isbi.join("train/image/25.png")).unwrap();
    // A 300 x 230 window: partial tiles on both axes, 16-bit values that are not 8-bit ones.
    let (w, h) = (300usize, 230usize);
    let gray: Vec<u16> = (0..w * h)
        .map(|i| {
            let (y, x) = (i / w, i % w);
            (full.data[(y + 40) * 512 + x + 100] * 65535.0) as u16 ^ (i as u16 & 0x3f)
        })
        .collect();
    let png16 = d.join("gray16.png");
    {
        let f = std::io::BufWriter::new(std::fs::File::create(&png16).unwrap());
        let mut enc = png::Encoder::new(f, w as u32, h as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Sixteen);
        let bytes: Vec<u8> = gray.iter().flat_map(|v| v.to_be_bytes()).collect();
        enc.write_header()
            .unwrap()
            .write_image_data(&bytes)
            .unwrap();
    }
    let rgb_tif = d.join("rgb8.tif");
    {
        use tiff::encoder::{TiffEncoder, colortype::RGB8};
        let rgb: Vec<u8> = gray
            .iter()
            .enumerate()
            .flat_map(|(i, &v)| [(v >> 8) as u8, (v >> 7) as u8, (i % 251) as u8])
            .collect();
        let f = std::fs::File::create(&rgb_tif).unwrap();
        let mut enc = TiffEncoder::new(f).unwrap();
        let mut img = enc.new_image::<RGB8>(w as u32, h as u32).unwrap();
        img.rows_per_strip(7).unwrap();
        for rows in rgb.chunks(7 * w * 3) {
            img.write_strip(rows).unwrap();
        }
        img.finish().unwrap();
    }
    let big_tif = d.join("tiled16.tif");
    write_tiled_bigtiff(&big_tif, w, h, &gray);

    let dev = burn::prelude::Device::flex();
    let ck = fixtures().join("unet/tiny_bilinear.pth");
    let loaded = segrs::models::unet::checkpoint::load(&ck, (None, None), &dev).unwrap();
    let p = SemanticPredictor::new(
        &loaded.model,
        segrs::data::preprocess::Normalize::new(vec![0.5], vec![0.2]).unwrap(),
        Engine::Host(segrs::ops::Precision::F32),
    )
    .unwrap();
    let tiling = Tiling {
        tile: 128,
        overlap: 32,
    };
    let none = |_: usize, _: usize| {};
    for path in [&png16, &rgb_tif, &big_tif] {
        let pic = read_image(path).unwrap();
        assert_eq!((pic.width, pic.height), (w, h));
        let want = p.tiled_logits(&pic, tiling, &none).unwrap();
        let labels = p.predict_tiled(&pic, tiling, &none).unwrap();
        let mut src = open_rows(path).unwrap();
        let k = want.len() / (w * h);
        let mut got = vec![0.0f32; want.len()];
        let mut got_labels = Vec::new();
        let mut next = 0;
        p.predict_rows(
            &mut *src,
            tiling,
            &mut |y, logits| {
                assert_eq!(y, next, "rows arrive in order");
                next += 1;
                for c in 0..k {
                    got[(c * h + y) * w..(c * h + y + 1) * w]
                        .copy_from_slice(&logits[c * w..(c + 1) * w]);
                }
                got_labels.extend(argmax_row(logits, w));
                Ok(())
            },
            &none,
        )
        .unwrap();
        assert_eq!(next, h);
        assert_eq!(got, want, "{}", path.display());
        assert_eq!(got_labels, labels.data, "{}", path.display());
        let (lo, hi) = want
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(hi - lo > 1e-3, "{}: constant logits", path.display());
    }
    // From the command line: the streamed BigTIFF's label PNG, and the in-memory path (taken
    // with --overlay) agree.
    let run = |name: &str, extra: &[&str]| {
        let out = d.join(name);
        let mut args = vec![
            "predict",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--mean",
            "0.5",
            "--std",
            "0.2",
            "--images",
            big_tif.to_str().unwrap(),
            "--tile",
            "128",
            "--overlap",
            "32",
            "--out",
        ];
        let o = out.to_str().unwrap().to_string();
        args.push(&o);
        args.extend_from_slice(extra);
        let (code, so, se) = crate::common::segrs(&args);
        assert_eq!(code, 0, "{so}{se}");
        read_mask(&out.join("tiled16.png")).unwrap().data
    };
    let streamed = run("streamed", &[]);
    let whole = run("in-memory", &["--overlay"]);
    assert_eq!(streamed, whole);
    assert_eq!(streamed.len(), w * h);
    // A truncated TIFF is an error that names the file.
    let bytes = std::fs::read(&big_tif).unwrap();
    let cut = d.join("cut.tif");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = open_rows(&cut)
        .and_then(|mut s| {
            let mut v = Vec::new();
            s.read_rows(h, &mut v)
        })
        .map(|_| ())
        .unwrap_err();
    assert!(format!("{err:#}").contains("cut.tif"), "{err:#}");
}
