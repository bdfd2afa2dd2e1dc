//! The system calls neither `std` nor tokio wraps, and so every `unsafe` block of the crate: the
//! rest of it is compiled with `#![deny(unsafe_code)]` (see `lib.rs`). Each function takes
//! borrowed descriptors, so a caller cannot hand it one that is closed.
#![allow(unsafe_code)]

use std::{
    io,
    ops::Range,
    os::fd::{AsRawFd, BorrowedFd},
};

/// `sendfile(2)`: up to `count` bytes of `file` from `*offset` to `socket` (non-blocking: the
/// caller waits for writability); advances `*offset`. `Ok(0)`: the file ended at `*offset`.
pub fn sendfile(
    socket: BorrowedFd<'_>,
    file: BorrowedFd<'_>,
    offset: &mut libc::off_t,
    count: usize,
) -> io::Result<u64> {
    // SAFETY: both descriptors are open for the whole call (borrowed), and `offset` is a valid,
    // exclusively borrowed off_t.
    let n = unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), offset, count) };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as u64) }
}

/// `TCP_CORK` on or off (best effort: without it only the segmentation changes).
pub fn set_cork(socket: BorrowedFd<'_>, on: bool) {
    let value: libc::c_int = on.into();
    // SAFETY: a valid socket descriptor and a c_int option value of the right size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Tells the kernel the range is read once, in order (a larger read-ahead for cold images).
pub fn advise_sequential(file: BorrowedFd<'_>, bytes: &Range<u64>) {
    let (Ok(start), Ok(len)) =
        (libc::off_t::try_from(bytes.start), libc::off_t::try_from(bytes.end - bytes.start))
    else {
        return;
    };
    // SAFETY: an open file descriptor; the advice has no memory effects.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), start, len, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// Starts (does not wait for) writeback of a byte range: `sync_file_range(SYNC_FILE_RANGE_WRITE)`.
/// Best effort: on filesystems without it, the final fsync does all the work.
pub fn start_writeback(file: BorrowedFd<'_>, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else { return };
    // SAFETY: the descriptor is valid for the borrow; the call reads no memory.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use super::*;

    /// sendfile moves the asked bytes of a file to a socket and advances the offset; at the end of
    /// the file it sends nothing.
    #[test]
    fn sendfile_sends_the_range_and_advances() {
        let mut file = tempfile::tempfile().expect("tempfile");
        file.write_all(b"0123456789").expect("write");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server_side, _) = listener.accept().expect("accept");
        let mut offset: libc::off_t = 2;
        let sent = sendfile(client.as_fd(), file.as_fd(), &mut offset, 5).expect("sendfile");
        assert_eq!((sent, offset), (5, 7));
        let mut got = [0u8; 5];
        server_side.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"23456");
        let mut at_end: libc::off_t = 10;
        assert_eq!(sendfile(client.as_fd(), file.as_fd(), &mut at_end, 5).expect("at the end"), 0);
    }
}
