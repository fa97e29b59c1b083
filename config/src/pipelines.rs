//! `[pipelines.*]`: which receivers feed which processors and exporters, one pipeline per signal.

use shardtel_protocol::Signal;

use crate::decode::{Decoder, Section};

/// `[pipelines]`: at most one pipeline per signal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pipelines {
    /// `[pipelines.traces]`.
    pub traces: Option<Pipeline>,
    /// `[pipelines.metrics]`.
    pub metrics: Option<Pipeline>,
    /// `[pipelines.logs]`.
    pub logs: Option<Pipeline>,
}

impl Pipelines {
    /// The keys `[pipelines]` accepts.
    pub const KEYS: &'static [&'static str] = &["traces", "metrics", "logs"];

    /// The pipeline of `signal`, if configured.
    pub fn get(&self, signal: Signal) -> Option<&Pipeline> {
        match signal {
            Signal::Traces => self.traces.as_ref(),
            Signal::Metrics => self.metrics.as_ref(),
            Signal::Logs => self.logs.as_ref(),
        }
    }

    /// The configured pipelines with their signal.
    pub fn iter(&self) -> impl Iterator<Item = (Signal, &Pipeline)> + '_ {
        Signal::ALL
            .into_iter()
            .filter_map(move |signal| self.get(signal).map(|p| (signal, p)))
    }
}

/// One `[pipelines.SIGNAL]`: component names, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pipeline {
    /// Names of `[receivers.*]` tables; at least one.
    pub receivers: Vec<String>,
    /// Names of `[processors.*]` tables, applied in this order.
    pub processors: Vec<String>,
    /// Names of `[exporters.*]` tables; each gets every item; at least one.
    pub exporters: Vec<String>,
}

impl Pipeline {
    /// The keys a pipeline accepts.
    pub const KEYS: &'static [&'static str] = &["receivers", "processors", "exporters"];
}

pub(crate) fn decode(d: &mut Decoder<'_>, root: &Section<'_, '_>) -> Pipelines {
    let s = d.section(root, "pipelines", Pipelines::KEYS);
    let mut pipelines = Pipelines::default();
    for signal in Signal::ALL {
        let p = d.section(&s, signal.name(), Pipeline::KEYS);
        if !p.exists() {
            continue;
        }
        let pipeline = Pipeline {
            receivers: d.string_list(&p, "receivers").unwrap_or_default(),
            processors: d.string_list(&p, "processors").unwrap_or_default(),
            exporters: d.string_list(&p, "exporters").unwrap_or_default(),
        };
        match signal {
            Signal::Traces => pipelines.traces = Some(pipeline),
            Signal::Metrics => pipelines.metrics = Some(pipeline),
            Signal::Logs => pipelines.logs = Some(pipeline),
        }
    }
    pipelines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_configured_pipelines_in_signal_order() {
        let pipelines = Pipelines {
            traces: None,
            metrics: Some(Pipeline::default()),
            logs: Some(Pipeline {
                receivers: vec!["otlp".into()],
                ..Pipeline::default()
            }),
        };
        let signals: Vec<Signal> = pipelines.iter().map(|(s, _)| s).collect();
        assert_eq!(signals, [Signal::Metrics, Signal::Logs]);
        assert_eq!(pipelines.get(Signal::Logs).unwrap().receivers, ["otlp"]);
        assert_eq!(Signal::Traces.to_string(), "traces");
    }
}
