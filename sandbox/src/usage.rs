//! Deterministic made-up usage figures: the same project and day always report the same minutes.

use std::hash::{DefaultHasher, Hash, Hasher};

use agora_console_client::types;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use crate::world::ProjectRecord;

/// The days of `from..=to` on which the project existed, up to `today` (later days have no usage yet).
pub(crate) fn days(
    from: NaiveDate,
    to: NaiveDate,
    created_ms: i64,
    today: NaiveDate,
) -> impl Iterator<Item = NaiveDate> {
    let created = DateTime::from_timestamp_millis(created_ms).map_or(NaiveDate::MIN, |t| t.date_naive());
    let first = from.max(created);
    let last = to.min(today);
    first.iter_days().take_while(move |day| *day <= last)
}

/// A figure in `0..scale` that depends only on its inputs.
fn figure(project: &str, day: NaiveDate, metric: &str, scale: u64) -> i64 {
    let mut hasher = DefaultHasher::new();
    (project, day, metric).hash(&mut hasher);
    (hasher.finish() % scale) as i64
}

fn day_number(day: NaiveDate) -> i32 {
    day.format("%Y%m%d").to_string().parse().expect("YYYYMMDD is a number")
}

pub(crate) fn daily_v1(project: &str, day: NaiveDate) -> types::DailyUsage {
    types::DailyUsage {
        date: day_number(day),
        audio: Some(figure(project, day, "audio", 5_000)),
        sd: Some(figure(project, day, "sd", 3_000)),
        hd: Some(figure(project, day, "hd", 2_000)),
        hdp: Some(figure(project, day, "hdp", 1_000)),
        extra: Default::default(),
    }
}

/// The metrics of each business. `default` is the documented set; the others are the sandbox's own names.
fn metrics(business: types::UsageBusiness) -> &'static [(&'static str, &'static str, &'static str)] {
    use types::UsageBusiness::*;
    match business {
        Default => &[
            ("durationAudioAll", "总音频时长", "Total Audio Duration"),
            ("durationVideoHd", "HD视频时长(含本地服务端录制)", "HD Video Duration(including On-premise Recording)"),
            ("durationVideoHdp", "HDP视频时长(含本地服务端录制)", "HDP Video Duration(including On-premise Recording)"),
        ],
        TranscodeDuration => &[
            ("transcodeAudio", "音频转码时长", "Audio Transcoding Duration"),
            ("transcodeHd", "HD转码时长", "HD Transcoding Duration"),
            ("transcodeHdp", "HDP转码时长", "HDP Transcoding Duration"),
        ],
        Recording => &[
            ("recordingAudio", "本地服务端录制音频时长", "On-premise Recording Audio Duration"),
            ("recordingHd", "本地服务端录制HD时长", "On-premise Recording HD Duration"),
        ],
        CloudRecording => &[
            ("cloudRecordingAudio", "云端录制音频时长", "Cloud Recording Audio Duration"),
            ("cloudRecordingHd", "云端录制HD时长", "Cloud Recording HD Duration"),
            ("cloudRecordingHdp", "云端录制HDP时长", "Cloud Recording HDP Duration"),
        ],
        Miniapp => &[
            ("miniappAudio", "小程序音频时长", "Mini Program Audio Duration"),
            ("miniappVideo", "小程序视频时长", "Mini Program Video Duration"),
        ],
    }
}

pub(crate) fn v3(
    project: &ProjectRecord,
    from: NaiveDate,
    to: NaiveDate,
    business: types::UsageBusiness,
    today: NaiveDate,
) -> types::UsageV3Response {
    let metrics = metrics(business);
    let meta = metrics
        .iter()
        .map(|(name, cn, en)| {
            let metric = types::UsageMetric {
                cn: Some(cn.to_string()),
                en: Some(en.to_string()),
                unit: Some("second".into()),
                extra: Default::default(),
            };
            (name.to_string(), metric)
        })
        .collect();
    let usages = days(from, to, project.created_ms, today)
        .map(|day| {
            let midnight = Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight exists"));
            types::DayUsageV3 {
                date: crate::world::timestamp(midnight),
                usage: metrics
                    .iter()
                    .map(|(name, _, _)| (name.to_string(), figure(&project.id, day, name, 300_000)))
                    .collect(),
                extra: Default::default(),
            }
        })
        .collect();
    types::UsageV3Response { meta, usages, extra: Default::default() }
}
