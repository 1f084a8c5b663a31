//! A streaming pcap writer (classic format, microsecond stamps, Ethernet),
//! so profiles of millions of packets never sit in memory whole.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Writes frames to a pcap file as they come.
#[derive(Debug)]
pub struct Writer {
    out: BufWriter<File>,
    packets: u64,
}

const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
const SNAPLEN: u32 = 65_535;

impl Writer {
    pub fn create(path: &Path) -> io::Result<Writer> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        out.write_all(&MAGIC_MICROS.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&SNAPLEN.to_le_bytes())?;
        out.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
        Ok(Writer { out, packets: 0 })
    }

    /// Appends one frame, stamped one microsecond after the previous.
    pub fn write(&mut self, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too long"))?;
        let secs = u32::try_from(self.packets / 1_000_000).unwrap_or(u32::MAX);
        let micros = u32::try_from(self.packets % 1_000_000).unwrap_or(0);
        self.out.write_all(&secs.to_le_bytes())?;
        self.out.write_all(&micros.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(frame)?;
        self.packets += 1;
        Ok(())
    }

    /// Flushes the file and says how many frames it holds.
    pub fn finish(mut self) -> io::Result<u64> {
        self.out.flush()?;
        Ok(self.packets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_file_pcap_readers_take() {
        let dir = std::env::temp_dir().join(format!("lb-bench-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcap");
        let mut w = Writer::create(&path).unwrap();
        w.write(&[1, 2, 3]).unwrap();
        w.write(&[4; 60]).unwrap();
        assert_eq!(w.finish().unwrap(), 2);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 24 + 16 + 3 + 16 + 60);
        assert_eq!(&bytes[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        // The second record's stamp is one microsecond on.
        assert_eq!(
            &bytes[24 + 16 + 3 + 4..24 + 16 + 3 + 8],
            &1u32.to_le_bytes()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
