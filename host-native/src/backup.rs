//! The backup file format, shared by the node's `GET /admin/backup` (which writes it) and the
//! `ringkv backup` / `ringkv restore` commands (which write, check and read it).
//!
//! A length-prefixed binary format rather than NDJSON: records are binary (each is a stored
//! object as [`Object::encode`] makes it, every sibling with its dot and the causal history),
//! so base64 in JSON would cost a third more bytes and an encoding pass per record for nothing
//! a reader needs; the one part a person may want to read, the header, is JSON.
//!
//! ```text
//! file    = magic header record* end
//! magic   = "RINGKVBK"
//! header  = u32 length | JSON (BackupHeader) | u32 crc32 of the JSON
//! record  = 0x01 | u32 length | bucket | u32 length | key | u32 length | record | u32 crc32
//! end     = 0x00 | u64 count of records | u32 crc32
//! ```
//!
//! Integers are little-endian; each crc32 covers its frame from the tag byte on. The record
//! itself carries the crc32 of [`Object::encode`] and every sibling its value's checksum, which
//! [`BackupReader`] checks too, so a flipped bit anywhere is found. A file that stops before its
//! end marker is truncated; the end marker's count must match the records read.

use std::io::{self, Read};

use ringkv_core::version::Object;
use serde::{Deserialize, Serialize};

/// The bytes every backup starts with.
pub const MAGIC: &[u8; 8] = b"RINGKVBK";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest header accepted, in bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest bucket name or key accepted in a record (far above the server's limits, which a
/// restore checks again).
const MAX_NAME_BYTES: usize = 1024 * 1024;
/// Largest record a backup holds: anything a node could have stored, which came to it in one
/// peer frame. Larger than a restore carries (`MAX_RESTORE_RECORD_BYTES`), on purpose: an object
/// grown past that (by blind writes beyond `max_object_bytes`) is still backed up whole, and its
/// restore fails alone, with that reason, rather than the backup being refused as damaged.
const MAX_RECORD_BYTES: usize = ringkv_core::wire::MAX_FRAME_BYTES;
const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;

/// What a backup holds, and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupMode {
    /// One node's records (its replicas and the hints it holds) from one read transaction.
    Node,
    /// One bucket, read key by key through the listing at the read quorum.
    Bucket,
    /// Every member's node backup, one after the other.
    Cluster,
}

/// The self-describing header of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// Always `ringkv-backup`.
    pub format: String,
    /// [`FORMAT_VERSION`] when written by this build.
    pub version: u32,
    /// What the backup holds.
    pub mode: BackupMode,
    /// The cluster it was taken from.
    pub cluster: String,
    /// The node(s) it was read from.
    pub nodes: Vec<String>,
    /// The bucket, for a bucket backup (lossy UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// When it was started, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The version of the program that wrote it.
    pub written_by: String,
}

impl BackupHeader {
    /// A header of this build's format.
    pub fn new(mode: BackupMode, cluster: &str, nodes: Vec<String>, created_ms: u64) -> Self {
        BackupHeader {
            format: "ringkv-backup".to_string(),
            version: FORMAT_VERSION,
            mode,
            cluster: cluster.to_string(),
            nodes,
            bucket: None,
            created_ms,
            written_by: format!("ringkv {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// The magic and the header, as a backup starts.
    pub fn encode(&self) -> Vec<u8> {
        // A plain struct of strings and numbers always serializes.
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut out = Vec::with_capacity(MAGIC.len() + json.len() + 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
        out
    }
}

/// One record of a backup: a key and its stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupRecord {
    /// Bucket.
    pub bucket: Vec<u8>,
    /// Key.
    pub key: Vec<u8>,
    /// The object, as [`Object::encode`] made it.
    pub record: Vec<u8>,
}

/// The frame of one record.
pub fn encode_record(bucket: &[u8], key: &[u8], record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + bucket.len() + key.len() + record.len());
    out.push(TAG_RECORD);
    for part in [bucket, key, record] {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The end marker after `count` records.
pub fn encode_end(count: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.push(TAG_END);
    out.extend_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Why a backup could not be read. Reading changes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The file could not be read.
    #[error("cannot read the backup: {0}")]
    Io(#[from] io::Error),
    /// It does not start with [`MAGIC`].
    #[error(
        "not a ringkv backup (it does not start with {:?})",
        String::from_utf8_lossy(MAGIC)
    )]
    NotABackup,
    /// A format version this build does not read.
    #[error("backup format version {found} is not supported (this build reads version {FORMAT_VERSION})")]
    Version {
        /// The file's version.
        found: u32,
    },
    /// The header is damaged or not a header.
    #[error("damaged backup header: {0}")]
    Header(String),
    /// A record (or the end marker) is damaged.
    #[error("damaged backup: record {index} at byte {offset}: {detail}")]
    Damaged {
        /// Records before it.
        index: u64,
        /// Its byte offset in the file.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// The file ends before its end marker (an interrupted backup or a cut copy).
    #[error("truncated backup: it ends after {records} record(s) at byte {offset}, without its end marker")]
    Truncated {
        /// Records read whole.
        records: u64,
        /// Where it ends.
        offset: u64,
    },
}

/// Reads a backup record by record, checking everything: magic, version, header, each frame's
/// crc32, each record's own checksums, the end marker and its count, and that nothing follows.
pub struct BackupReader<R> {
    input: R,
    header: BackupHeader,
    offset: u64,
    records: u64,
    ended: bool,
}

impl<R: Read> BackupReader<R> {
    /// Reads and checks the magic and the header.
    pub fn open(mut input: R) -> Result<Self, BackupError> {
        let mut magic = [0u8; 8];
        match read_full(&mut input, &mut magic)? {
            8 if &magic == MAGIC => {}
            _ => return Err(BackupError::NotABackup),
        }
        let mut length = [0u8; 4];
        if read_full(&mut input, &mut length)? < 4 {
            return Err(BackupError::Header("cut short".into()));
        }
        let length = u32::from_le_bytes(length) as usize;
        if length > MAX_HEADER_BYTES {
            return Err(BackupError::Header(format!("{length} bytes long")));
        }
        let mut json = vec![0u8; length + 4];
        if read_full(&mut input, &mut json)? < json.len() {
            return Err(BackupError::Header("cut short".into()));
        }
        let (json, crc) = json.split_at(length);
        if crc32fast::hash(json).to_le_bytes() != crc {
            return Err(BackupError::Header("checksum mismatch".into()));
        }
        // The version first, so that a newer format's header is named as such.
        #[derive(Deserialize)]
        struct Versioned {
            format: String,
            version: u32,
        }
        let versioned: Versioned =
            serde_json::from_slice(json).map_err(|error| BackupError::Header(error.to_string()))?;
        if versioned.format != "ringkv-backup" {
            return Err(BackupError::Header(format!(
                "format {:?}, not ringkv-backup",
                versioned.format
            )));
        }
        if versioned.version != FORMAT_VERSION {
            return Err(BackupError::Version {
                found: versioned.version,
            });
        }
        let header: BackupHeader =
            serde_json::from_slice(json).map_err(|error| BackupError::Header(error.to_string()))?;
        Ok(BackupReader {
            input,
            header,
            offset: (8 + 4 + length + 4) as u64,
            records: 0,
            ended: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The next record, checked; `None` after the end marker (checked, with nothing after it).
    pub fn next_record(&mut self) -> Result<Option<BackupRecord>, BackupError> {
        if self.ended {
            return Ok(None);
        }
        let start = self.offset;
        let mut frame = Vec::new();
        let mut tag = [0u8; 1];
        if self.read(&mut tag)? < 1 {
            return Err(self.truncated(start));
        }
        frame.push(tag[0]);
        match tag[0] {
            TAG_END => {
                let mut count = [0u8; 8];
                self.read_exact_or(&mut count, start)?;
                frame.extend_from_slice(&count);
                self.check_crc(&frame, start)?;
                let count = u64::from_le_bytes(count);
                if count != self.records {
                    return Err(self.damaged(
                        start,
                        format!(
                            "the end marker counts {count} records, {} were read",
                            self.records
                        ),
                    ));
                }
                let mut extra = [0u8; 1];
                if self.read(&mut extra)? > 0 {
                    return Err(self.damaged(self.offset, "bytes after the end marker".into()));
                }
                self.ended = true;
                Ok(None)
            }
            TAG_RECORD => {
                let mut parts: Vec<Vec<u8>> = Vec::with_capacity(3);
                for (name, max) in [
                    ("bucket", MAX_NAME_BYTES),
                    ("key", MAX_NAME_BYTES),
                    ("record", MAX_RECORD_BYTES),
                ] {
                    let mut length = [0u8; 4];
                    self.read_exact_or(&mut length, start)?;
                    frame.extend_from_slice(&length);
                    let length = u32::from_le_bytes(length) as usize;
                    if length > max {
                        return Err(
                            self.damaged(start, format!("a {name} of {length} bytes claimed"))
                        );
                    }
                    let mut part = vec![0u8; length];
                    self.read_exact_or(&mut part, start)?;
                    frame.extend_from_slice(&part);
                    parts.push(part);
                }
                self.check_crc(&frame, start)?;
                let record = parts.pop().unwrap_or_default();
                let key = parts.pop().unwrap_or_default();
                let bucket = parts.pop().unwrap_or_default();
                if let Err(error) = Object::decode(&record) {
                    return Err(self.damaged(start, format!("its object: {error}")));
                }
                if key.is_empty() {
                    return Err(self.damaged(start, "an empty key".into()));
                }
                self.records += 1;
                Ok(Some(BackupRecord {
                    bucket,
                    key,
                    record,
                }))
            }
            other => Err(self.damaged(start, format!("unknown frame tag {other}"))),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, BackupError> {
        let n = read_full(&mut self.input, buf)?;
        self.offset += n as u64;
        Ok(n)
    }

    fn read_exact_or(&mut self, buf: &mut [u8], start: u64) -> Result<(), BackupError> {
        if self.read(buf)? < buf.len() {
            return Err(self.truncated(start));
        }
        Ok(())
    }

    fn check_crc(&mut self, frame: &[u8], start: u64) -> Result<(), BackupError> {
        let mut crc = [0u8; 4];
        self.read_exact_or(&mut crc, start)?;
        if crc32fast::hash(frame).to_le_bytes() != crc {
            return Err(self.damaged(start, "checksum mismatch".into()));
        }
        Ok(())
    }

    fn damaged(&self, offset: u64, detail: String) -> BackupError {
        BackupError::Damaged {
            index: self.records,
            offset,
            detail,
        }
    }

    fn truncated(&self, offset: u64) -> BackupError {
        BackupError::Truncated {
            records: self.records,
            offset,
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::version::{ActorId, ConflictMode, Content, VersionVector};

    fn object(value: &[u8]) -> Vec<u8> {
        let mut object = Object::new();
        object.update(
            &VersionVector::new(),
            &ActorId::new("n1.1.0"),
            Content::Value(value.to_vec()),
            5,
            ConflictMode::Siblings,
        );
        object.encode()
    }

    fn sample() -> Vec<u8> {
        let header = BackupHeader::new(BackupMode::Node, "c", vec!["n1".into()], 7);
        let mut file = header.encode();
        file.extend(encode_record(b"b", b"k1", &object(b"one")));
        file.extend(encode_record(b"b", b"k2", &object(b"two")));
        file.extend(encode_end(2));
        file
    }

    fn read_all(file: &[u8]) -> Result<Vec<BackupRecord>, BackupError> {
        let mut reader = BackupReader::open(file)?;
        let mut records = Vec::new();
        while let Some(record) = reader.next_record()? {
            records.push(record);
        }
        Ok(records)
    }

    #[test]
    fn a_backup_reads_back_whole() {
        let file = sample();
        let reader = BackupReader::open(file.as_slice()).expect("header");
        assert_eq!(reader.header().mode, BackupMode::Node);
        assert_eq!(reader.header().cluster, "c");
        let records = read_all(&file).expect("records");
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].key, b"k2");
        assert_eq!(records[1].record, object(b"two"));
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_an_error() {
        let file = sample();
        for i in 0..file.len() {
            for bit in [0x01u8, 0x80] {
                let mut damaged = file.clone();
                damaged[i] ^= bit;
                assert!(
                    read_all(&damaged).is_err(),
                    "byte {i} bit {bit:#x} went unseen"
                );
            }
        }
        for cut in 0..file.len() {
            assert!(read_all(&file[..cut]).is_err(), "cut at {cut} went unseen");
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(read_all(&longer).is_err());
    }

    #[test]
    fn another_version_or_garbage_is_named() {
        let mut header = BackupHeader::new(BackupMode::Bucket, "c", Vec::new(), 0);
        header.version = 99;
        let file = header.encode();
        assert!(matches!(
            BackupReader::open(file.as_slice()),
            Err(BackupError::Version { found: 99 })
        ));
        assert!(matches!(
            BackupReader::open(&b"hello world, not a backup"[..]),
            Err(BackupError::NotABackup)
        ));
        let error = read_all(&sample()[..40]).err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("header") || e.contains("truncated")));
    }
}
