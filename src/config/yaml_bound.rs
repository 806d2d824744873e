//! A bound on how many YAML nodes a config file may expand to.
//!
//! The byte cap ([`MAX_CONFIG_FILE_BYTES`](super::file::MAX_CONFIG_FILE_BYTES))
//! does not bound what a parse builds: an alias (`*a`) replays every node
//! of its anchor, so `a: &a [0, … ×25k]` plus `b: [*a, … ×16k]` is ~100 KB
//! of text and 400 M nodes. serde_yaml_ng's own limit counts alias jumps
//! (up to 100 per event), not the nodes they expand to.
//!
//! We chose counting over refusing aliases: anchors and aliases (and `<<`
//! merges, which are aliases) are legitimate in hand-written configs, and a
//! count bounds every shape of expansion (nested aliases, merges, tags) with
//! one rule. The first pass drives [`serde_yaml_ng::Deserializer`] with a
//! visitor that builds nothing and fails once more than [`MAX_CONFIG_NODES`]
//! nodes have been visited. The deserializer replays an alias's events on
//! every use, so the count is the expanded size; the pass allocates only
//! the deserializer's event list, which the byte cap bounds. The real parse
//! then runs on a document known to be small.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};

/// Most YAML nodes (scalars, sequences and mappings, counted after alias
/// expansion) a config file may contain: 100,000. A real config has a few
/// dozen; this leaves room for thousands of contexts.
pub(crate) const MAX_CONFIG_NODES: usize = 100_000;

/// What the counting pass found.
#[derive(Debug)]
pub(crate) enum Count {
    /// At most `limit` nodes.
    Within,
    /// More than `limit` nodes (the pass stopped at the first one too many).
    TooMany,
    /// The text is not one valid YAML document.
    Invalid(serde_yaml_ng::Error),
}

/// Counts the nodes of `text` (one YAML document), stopping past `limit`.
pub(crate) fn count_nodes(text: &str, limit: usize) -> Count {
    let counter = Counter {
        left: Cell::new(limit),
        exceeded: Cell::new(false),
    };
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match Node(&counter).deserialize(de) {
        Ok(()) => Count::Within,
        Err(_) if counter.exceeded.get() => Count::TooMany,
        Err(e) => Count::Invalid(e),
    }
}

struct Counter {
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

/// One node: counts itself, then visits its children.
#[derive(Clone, Copy)]
struct Node<'c>(&'c Counter);

impl Node<'_> {
    fn count<E: de::Error>(self) -> Result<(), E> {
        match self.0.left.get().checked_sub(1) {
            Some(left) => {
                self.0.left.set(left);
                Ok(())
            }
            None => {
                self.0.exceeded.set(true);
                Err(E::custom("too many YAML nodes"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.count()
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.count()
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.count()
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.count()
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.count()
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.count()
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.count()
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<(), E> {
        self.count()
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.count()
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.count()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        self.deserialize(de)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        self.deserialize(de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.count()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.count()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }

    /// A tagged node (`!tag value`): the tag and its value.
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use de::VariantAccess;
        self.count()?;
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(text: &str, limit: usize) -> Count {
        count_nodes(text, limit)
    }

    #[test]
    fn counts_scalars_collections_and_tags() {
        // mapping + 2 keys + 2 values, the second a 3-element list.
        assert!(matches!(count("a: 1\nb: [x, y, z]\n", 8), Count::Within));
        assert!(matches!(count("a: 1\nb: [x, y, z]\n", 7), Count::TooMany));
        assert!(matches!(count("a: !t 1\n", 10), Count::Within));
        assert!(matches!(count("", 1), Count::Within));
    }

    #[test]
    fn aliases_count_their_expansion() {
        let text = "a: &a [1, 2, 3, 4]\nb: [*a, *a, *a]\n";
        // 1 root + 2 keys + 5 (anchor) + 1 (b) + 3 × 5 (aliases) = 24.
        assert!(matches!(count(text, 24), Count::Within));
        assert!(matches!(count(text, 23), Count::TooMany));
        let merge = "base: &b {engine: x}\nc: {<<: *b, name: y}\n";
        assert!(matches!(count(merge, 100), Count::Within));
    }

    #[test]
    fn invalid_yaml_is_reported_as_such() {
        assert!(matches!(count("a: [\n", 100), Count::Invalid(_)));
        assert!(matches!(count("a: 1\n---\nb: 2\n", 100), Count::Invalid(_)));
        assert!(matches!(count("a: *nope\n", 100), Count::Invalid(_)));
    }
}
