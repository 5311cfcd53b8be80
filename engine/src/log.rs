//! lbd's log: lines on standard error, each handed to the kernel whole.
//!
//! Standard error is unbuffered, and `eprintln!` gives write(2) each piece
//! of its format separately: whoever reads the log while lbd writes it (a
//! test or script waiting for the ready line, `tail -f`, journald merging
//! the lines of DPDK's C code) can find half a line, and did (the ready
//! line was read as `lbd: ready: ` alone). [`log_line!`] formats the line
//! first and writes it with one call, so no reader meets a line cut
//! between its pieces. (A reader of a regular file can still meet the
//! tail of a write in progress, which the kernel copies page by page: a
//! reader that needs a whole line waits for its newline, as the tests'
//! wait for the ready line does.) It also never panics: `eprintln!`
//! does when standard error fails (a logger that went away), and a daemon
//! must not stop forwarding because nobody reads its log.

use std::fmt;
use std::io::{self, Write};

/// `eprintln!`'s arguments; the line reaches standard error in one write.
macro_rules! log_line {
    ($($arg:tt)*) => {
        $crate::log::write_line(&mut ::std::io::stderr().lock(), format_args!($($arg)*))
    };
}
pub(crate) use log_line;

/// Formats `args` and a newline into one buffer and writes it with one
/// `write_all` (one write(2) on standard error, which buffers nothing).
/// Errors are dropped: there is nobody left to tell.
pub fn write_line(out: &mut impl Write, args: fmt::Arguments<'_>) {
    let mut line = fmt::format(args);
    line.push('\n');
    let _: io::Result<()> = out.write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every `write` call it is given.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_with_arguments_is_one_write() {
        let mut w = Writes::default();
        let (workers, socket) = (2, "/run/lbd.sock");
        write_line(&mut w, format_args!("lbd: ready: {workers} worker(s), control {socket}, metrics {}", "off"));
        assert_eq!(w.0, vec![b"lbd: ready: 2 worker(s), control /run/lbd.sock, metrics off\n".to_vec()]);
    }

    /// A writer that fails (standard error closed, a full pipe) is not
    /// a panic.
    #[test]
    fn a_failing_writer_is_ignored() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        write_line(&mut Broken, format_args!("lbd: {}", "stopping"));
    }
}
