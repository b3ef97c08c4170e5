//! What a stage kind shows on the live page beside its events in and out:
//! a label and the metric it is read from. Stage kinds name their figures
//! here (`StageSpec::figures`); the view ([`crate::view`]) reads them.

/// A figure a stage kind shows beside its events in and out, read from
/// the process's metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure {
    /// What it is, as the page labels it (`commits/s`, `consumer lag`).
    pub label: &'static str,
    /// Where its value comes from.
    pub source: FigureSource,
}

/// How a [`Figure`] is computed. Every series of the named metric is
/// summed, so a figure is per process, not per stage, when a topology has
/// two stages of one kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FigureSource {
    /// A counter's increase per second.
    Rate(&'static str),
    /// The increase per second of the series of a counter that carry one
    /// label value.
    RateWhere {
        /// The counter.
        metric: &'static str,
        /// The label the series must carry, and its value.
        label: (&'static str, &'static str),
    },
    /// A gauge's value now.
    Value(&'static str),
    /// One counter's increase over another's in the same interval (events
    /// per commit); empty when the denominator did not move.
    Ratio {
        /// The counter counted per unit.
        numerator: &'static str,
        /// The unit's counter.
        denominator: &'static str,
    },
    /// One quantile of a summary (`"0.99"`).
    Quantile {
        /// The summary's name.
        metric: &'static str,
        /// The quantile label as the exporter renders it.
        quantile: &'static str,
    },
}
