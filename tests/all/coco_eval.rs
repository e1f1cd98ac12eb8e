//! COCO instance and panoptic evaluation against pycocotools' COCOeval and panopticapi's
//! pq_compute (tools/gen_coco_fixtures.py) on the shared COCO128 and panoptic samples: equal to
//! 1e-6 (they agree to the last bit). RLE round trips and polygon rasterisation
//! against pycocotools. Bad input: clear errors naming the file and the item.

use crate::common::{fixtures, shared_data, tmp};
use segrs::formats::coco::{decode_rowmajor, encode_rowmajor, load_gt, load_results};
use segrs::metrics::coco::evaluate_files;
use std::path::PathBuf;

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-6, "{what}: {a} vs {b}");
}

fn coco128_gt() -> Option<PathBuf> {
    shared_data("coco128_instances").map(|d| d.join("annotations").join("instances_train2017.json"))
}

#[test]
fn coco128_segm_and_bbox_match_pycocotools() {
    let Some(gt) = coco128_gt() else { return };
    let d = fixtures().join("coco");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("coco128_expected.json")).unwrap())
            .unwrap();
    for (kind, file, t) in [
        ("segm", "coco128_results.json", hotcoco::IouType::Segm),
        ("bbox", "coco128_bbox_results.json", hotcoco::IouType::Bbox),
    ] {
        let r = evaluate_files(&gt, &d.join(file), t).unwrap();
        let w = &want[kind];
        for (i, v) in r.stats.iter().enumerate() {
            close(
                *v,
                w["stats"][i].as_f64().unwrap(),
                &format!("{kind} stats[{i}]"),
            );
        }
        // The precision-recall curves are pycocotools' accumulated precision: averaged over
        // the 101 recall points they give AP, AP50 and AP75.
        let c = r.curves.as_ref().unwrap();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert_eq!(c.recall.len(), 101);
        close(
            mean(&c.iou_50_95),
            r.stats[0],
            &format!("{kind} AP from the curve"),
        );
        close(
            mean(&c.iou_50),
            r.stats[1],
            &format!("{kind} AP50 from the curve"),
        );
        close(
            mean(&c.iou_75),
            r.stats[2],
            &format!("{kind} AP75 from the curve"),
        );
        for (k, v) in &c.per_category {
            let ap = r
                .per_category
                .iter()
                .find(|x| x.category_id == *k)
                .unwrap()
                .ap;
            if ap > -1.0 {
                close(
                    mean(v),
                    ap,
                    &format!("{kind} AP of category {k} from its curve"),
                );
            }
        }
        let wc = w["per_category"].as_array().unwrap();
        assert_eq!(r.per_category.len(), wc.len());
        for (c, x) in r.per_category.iter().zip(wc) {
            assert_eq!(c.category_id, x["category_id"].as_u64().unwrap());
            close(
                c.ap,
                x["ap"].as_f64().unwrap(),
                &format!("{kind} AP of category {}", c.category_id),
            );
        }
    }
}

#[test]
fn coco128_boundary_ap_matches_reference() {
    let Some(gt) = coco128_gt() else { return };
    let d = fixtures().join("coco");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("coco128_expected.json")).unwrap())
            .unwrap();
    // The same COCOeval logic with plain mask IoU is pycocotools' segm evaluation.
    let g = segrs::formats::coco::load_gt(&gt).unwrap();
    let dt = load_results(&g, &d.join("coco128_results.json"), true).unwrap();
    let r = segrs::metrics::boundary_ap::evaluate_with(&g, &dt, false).unwrap();
    for (i, v) in r.stats.iter().enumerate() {
        close(
            *v,
            want["segm"]["stats"][i].as_f64().unwrap(),
            &format!("segm (own COCOeval) stats[{i}]"),
        );
    }
    let r =
        segrs::metrics::boundary_ap::evaluate_files(&gt, &d.join("coco128_results.json")).unwrap();
    let w = &want["boundary"];
    for (i, v) in r.stats.iter().enumerate() {
        close(
            *v,
            w["stats"][i].as_f64().unwrap(),
            &format!("boundary stats[{i}]"),
        );
    }
    for (c, x) in r
        .per_category
        .iter()
        .zip(w["per_category"].as_array().unwrap())
    {
        close(
            c.ap,
            x["ap"].as_f64().unwrap(),
            &format!("boundary AP of category {}", c.category_id),
        );
    }
}

#[test]
fn panoptic_sample_matches_panopticapi() {
    let Some(src) = shared_data("coco_panoptic_sample") else {
        return;
    };
    let d = fixtures().join("panoptic");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap()).unwrap();
    let r = segrs::metrics::panoptic::evaluate_files(
        &src.join("sample_data/panoptic_examples.json"),
        &src.join("sample_data/panoptic_examples"),
        &d.join("pred.json"),
        &d.join("pred"),
        Some(&src.join("panoptic_coco_categories.json")),
    )
    .unwrap();
    for (name, s) in [("All", &r.all), ("Things", &r.things), ("Stuff", &r.stuff)] {
        close(
            s.pq,
            want[name]["pq"].as_f64().unwrap(),
            &format!("{name} PQ"),
        );
        close(
            s.sq,
            want[name]["sq"].as_f64().unwrap(),
            &format!("{name} SQ"),
        );
        close(
            s.rq,
            want[name]["rq"].as_f64().unwrap(),
            &format!("{name} RQ"),
        );
        assert_eq!(s.n as u64, want[name]["n"].as_u64().unwrap());
    }
    let wp = want["per_class"].as_object().unwrap();
    assert_eq!(r.per_class.len(), wp.len());
    for (id, c) in &r.per_class {
        close(
            c.pq,
            wp[&id.to_string()]["pq"].as_f64().unwrap(),
            &format!("PQ of class {id}"),
        );
    }
}

#[test]
fn rle_round_trips_and_matches_pycocotools() {
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("coco/rle_cases.json")).unwrap(),
    )
    .unwrap();
    for c in v["cases"].as_array().unwrap() {
        let (h, w) = (
            c["h"].as_u64().unwrap() as u32,
            c["w"].as_u64().unwrap() as u32,
        );
        let m: Vec<u8> = c["mask_rowmajor"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u8)
            .collect();
        let rle = encode_rowmajor(&m, h, w).unwrap();
        assert_eq!(
            hotcoco::mask::rle_to_string(&rle),
            c["counts"].as_str().unwrap(),
            "{h}x{w}"
        );
        assert_eq!(decode_rowmajor(&rle), m, "{h}x{w} round trip");
        assert_eq!(hotcoco::mask::area(&rle), c["area"].as_u64().unwrap());
        let bb = hotcoco::mask::to_bbox(&rle);
        for k in 0..4 {
            assert_eq!(bb[k], c["bbox"][k].as_f64().unwrap());
        }
        let back = hotcoco::mask::rle_from_string(c["counts"].as_str().unwrap(), h, w).unwrap();
        assert_eq!(back, rle);
    }
    let p = &v["polygon"];
    let pts: Vec<Vec<f64>> = serde_json::from_value(p["points"].clone()).unwrap();
    let rle = hotcoco::mask::fr_polys(
        &pts,
        p["h"].as_u64().unwrap() as u32,
        p["w"].as_u64().unwrap() as u32,
    )
    .unwrap();
    assert_eq!(
        hotcoco::mask::rle_to_string(&rle),
        p["counts"].as_str().unwrap()
    );
}

#[test]
fn bad_coco_input_names_the_file_and_item() {
    let d = tmp("coco-bad");
    let gt = d.join("gt.json");
    std::fs::write(
        &gt,
        r#"{"images":[{"id":1,"height":4,"width":5,"file_name":"a.jpg"}],"categories":[{"id":3,"name":"x"}],
           "annotations":[{"id":1,"image_id":1,"category_id":3,"segmentation":[[0,0,4,0,4,3]],"area":6,"bbox":[0,0,4,3],"iscrowd":0}]}"#,
    )
    .unwrap();
    let g = load_gt(&gt).unwrap();
    let dt = d.join("dt.json");
    let cases = [
        (
            r#"[{"image_id":1,"category_id":3,"score":0.5,"segmentation":{"size":[4,5],"counts":"0"}}]"#,
            "counts",
        ),
        (
            r#"[{"image_id":9,"category_id":3,"score":0.5,"bbox":[0,0,1,1]}]"#,
            "image_id 9",
        ),
        (
            r#"[{"image_id":1,"category_id":77,"score":0.5,"bbox":[0,0,1,1]}]"#,
            "category_id 77",
        ),
        (
            r#"[{"image_id":1,"category_id":3,"score":0.5,"segmentation":{"size":[8,8],"counts":"P1"}}]"#,
            "image size",
        ),
        (
            r#"[{"image_id":1,"category_id":3,"segmentation":{"size":[4,5],"counts":[20]}}]"#,
            "no score",
        ),
        (
            r#"[{"image_id":1, "category_id":3, "score": 0.5, "bbox": [0,0,1,1]"#,
            "malformed JSON",
        ),
    ];
    for (text, needle) in cases {
        std::fs::write(&dt, text).unwrap();
        let err = format!(
            "{:#}",
            load_results(&g, &dt, false)
                .err()
                .unwrap_or_else(|| panic!("{text} was accepted"))
        );
        assert!(
            err.contains("dt.json") && err.contains(needle),
            "{needle}: {err}"
        );
    }
    std::fs::write(&gt, "{\"images\": [").unwrap();
    let err = format!("{:#}", load_gt(&gt).err().unwrap());
    assert!(
        err.contains("gt.json") && err.contains("malformed"),
        "{err}"
    );
}

#[test]
fn panoptic_ids_missing_from_json_are_an_error() {
    let Some(src) = shared_data("coco_panoptic_sample") else {
        return;
    };
    let d = tmp("pan-bad");
    let mut pred: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("panoptic/pred.json")).unwrap(),
    )
    .unwrap();
    pred["annotations"][0]["segments_info"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    let pj = d.join("pred.json");
    std::fs::write(&pj, serde_json::to_string(&pred).unwrap()).unwrap();
    let err = segrs::metrics::panoptic::evaluate_files(
        &src.join("sample_data/panoptic_examples.json"),
        &src.join("sample_data/panoptic_examples"),
        &pj,
        &fixtures().join("panoptic/pred"),
        Some(&src.join("panoptic_coco_categories.json")),
    )
    .expect_err("a PNG id without a JSON entry must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("pred.json"), "{msg}");
}
