//! Integration tests, one binary (linking burn once keeps the suite fast on 2 cores).

mod cli;
mod coco_eval;
mod common;
mod convert;
mod datasets;
mod losses_parity;
mod mask2former_parity;
mod maskrcnn_cli;
mod maskrcnn_parity;
mod maskrcnn_train_cli;
mod maskrcnn_train_parity;
mod metrics_parity;
mod ops_parity;
mod plots;
mod sam2_parity;
mod sam2_video;
mod sam_cli;
mod sam_parity;
mod sam_predictor;
mod sam_tinyvit;
mod serve;
mod serve_browser;
mod train_ops_parity;
mod train_resume;
mod unet_parity;
mod video_eval;
