//! What the aggregate stage reports. Each event names its metrics once,
//! here.

use pipeline::view::{Figure, FigureSource};

/// What the live page shows of an aggregate stage.
pub(crate) fn figures() -> Vec<Figure> {
    vec![
        Figure { label: "pending items", source: FigureSource::Value(FoldMeasured::PENDING_ITEMS) },
        Figure { label: "table bytes", source: FigureSource::Value(FoldMeasured::TABLE_BYTES) },
    ]
}

/// The fold was measured (on the flush timer).
pub(crate) struct FoldMeasured {
    /// Items pending over all shards.
    pub pending_items: usize,
    /// Memory of the fold's tables, bytes.
    pub table_bytes: usize,
}

impl FoldMeasured {
    /// `histflow_aggregate_pending_items`.
    const PENDING_ITEMS: &'static str = "histflow_aggregate_pending_items";
    /// `histflow_aggregate_table_bytes`.
    const TABLE_BYTES: &'static str = "histflow_aggregate_table_bytes";

    pub fn emit(&self) {
        metrics::gauge!(Self::PENDING_ITEMS).set(self.pending_items as f64);
        metrics::gauge!(Self::TABLE_BYTES).set(self.table_bytes as f64);
    }
}
