//! Protobuf wire-format reading shared by the decoders (Remote Write requests, protobuf
//! exposition): varints, field keys, length-delimited fields, skipping unknown fields.

use std::ops::Range;

/// A malformed protobuf input; the message says what was wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct WireError(pub &'static str);

#[inline]
pub fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(WireError("truncated varint"))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(WireError("varint too long"))
}

/// Reads a field key; returns (field number, wire type).
#[inline]
pub fn key(buf: &[u8], pos: &mut usize) -> Result<(u64, u8), WireError> {
    let k = varint(buf, pos)?;
    Ok((k >> 3, (k & 7) as u8))
}

#[inline]
pub fn len_delimited(buf: &[u8], pos: &mut usize) -> Result<Range<usize>, WireError> {
    let n = usize::try_from(varint(buf, pos)?).map_err(|_| WireError("length overflow"))?;
    let start = *pos;
    let end = start
        .checked_add(n)
        .filter(|e| *e <= buf.len())
        .ok_or(WireError("truncated field"))?;
    *pos = end;
    Ok(start..end)
}

#[inline]
pub fn fixed64(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let bytes = buf
        .get(*pos..*pos + 8)
        .ok_or(WireError("truncated fixed64"))?;
    *pos += 8;
    Ok(u64::from_le_bytes(
        bytes
            .try_into()
            .map_err(|_| WireError("truncated fixed64"))?,
    ))
}

pub fn skip(buf: &[u8], pos: &mut usize, wire: u8) -> Result<(), WireError> {
    let n = match wire {
        0 => return varint(buf, pos).map(drop),
        1 => 8,
        2 => return len_delimited(buf, pos).map(drop),
        5 => 4,
        _ => return Err(WireError("unsupported wire type")),
    };
    if *pos + n > buf.len() {
        return Err(WireError("truncated fixed-width field"));
    }
    *pos += n;
    Ok(())
}
