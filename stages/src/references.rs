//! Reading the records that references name (uid, item) from the realtime
//! store: in bounded chunks of whole users, each chunk retried while Redis
//! is away. The job completes an `ids` window this way; the producer of a
//! `fetched` bridge completes a flush this way before shipping it.

use backends::retry;
use backends::user_state::{StoreError, UserStore};
use model::codec::{self, DecodeError};
use model::Record;

/// What the store holds for one reference.
pub(crate) enum Referenced {
    /// The record, decoded, and its stored bytes.
    Found(Record, Vec<u8>),
    /// Nothing: deleted, cleared, trimmed or expired since.
    Missing,
    /// Stored bytes that are not a record.
    Undecodable(DecodeError),
}

/// Records one read asks Redis for at most (a user with more goes alone),
/// so a large window is many bounded calls, each well within the client's
/// response timeout, not one pipeline of everything.
const READ_CHUNK_ITEMS: usize = 2_000;

/// `wanted` in consecutive runs of users holding at most
/// [`READ_CHUNK_ITEMS`] items (or one user).
fn read_chunks(wanted: &[(u64, Vec<String>)]) -> Vec<&[(u64, Vec<String>)]> {
    let mut chunks = Vec::new();
    let (mut start, mut items) = (0, 0);
    for (index, (_, user_items)) in wanted.iter().enumerate() {
        if index > start && items + user_items.len() > READ_CHUNK_ITEMS {
            chunks.push(&wanted[start..index]);
            (start, items) = (index, 0);
        }
        items += user_items.len();
    }
    if start < wanted.len() {
        chunks.push(&wanted[start..]);
    }
    chunks
}

/// What the store holds for each wanted item, per user, in order. A
/// chunk whose read fails is read again after a pause, `on_retry` told of
/// each failure; reading nothing new meanwhile is the backpressure.
pub(crate) async fn read_referenced(
    store: &UserStore,
    wanted: &[(u64, Vec<String>)],
    mut on_retry: impl FnMut(&StoreError, std::time::Duration),
) -> Vec<Vec<Referenced>> {
    let mut found = Vec::with_capacity(wanted.len());
    for chunk in read_chunks(wanted) {
        found.extend(retry::until_ok(|| store.read_records(chunk), &mut on_retry).await);
    }
    let decoded = |stored: Option<Vec<u8>>| match stored {
        Some(bytes) => match codec::decode_record(&bytes) {
            Ok(record) => Referenced::Found(record, bytes),
            Err(error) => Referenced::Undecodable(error),
        },
        None => Referenced::Missing,
    };
    found.into_iter().map(|records| records.into_iter().map(decoded).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(sizes: &[usize]) -> Vec<(u64, Vec<String>)> {
        sizes.iter().enumerate().map(|(uid, size)| (uid as u64, (0..*size).map(|oid| format!("archive:{oid}")).collect())).collect()
    }

    #[test]
    fn a_read_is_cut_into_bounded_runs_of_whole_users() {
        let wanted = users(&[1500, 400, 200, 3000, 10, 10]);
        let chunks = read_chunks(&wanted);
        let sizes: Vec<Vec<u64>> = chunks.iter().map(|chunk| chunk.iter().map(|(uid, _)| *uid).collect()).collect();
        // 1500+400 fit; +200 would not; a user over the bound goes alone.
        assert_eq!(sizes, vec![vec![0, 1], vec![2], vec![3], vec![4, 5]]);
        assert_eq!(chunks.iter().map(|chunk| chunk.len()).sum::<usize>(), wanted.len(), "every user once, in order");
        assert!(read_chunks(&[]).is_empty());
    }
}
