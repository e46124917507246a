// steepest/io/file.hpp -- durable file writes and bounded file reads (POSIX), for checkpoints.
//
// Writing (DurableWriter): the bytes go to one temporary file per target, "<path>.tmp". Whatever
// sits at that name (a killed save's leftover, or a symlink or hard link someone planted in the
// directory) is unlinked, never opened, and the temporary is created anew with
// O_CREAT | O_EXCL | O_NOFOLLOW: a save never writes through a link. The target itself must be
// a regular file or absent: a symlink, FIFO or directory at `path` is refused before anything is
// written (save to the file a link names, not to the link). The new file keeps the old one's
// permission bits (and, where the process may, its owner and group); a new target gets 0666
// less the umask, as any new file. commit() then
//   1. fsync()s the temporary (its data and size are on disk before its name is),
//   2. close()s it and checks the result (NFS and quota errors are reported at close),
//   3. rename()s it over `path` (atomic: a reader sees the old file or the new one), and
//   4. fsync()s the directory, so the rename itself survives a power loss.
// Any failure removes the temporary and throws state_file_error; `path` is untouched until the
// rename. Two processes saving to the same path at once are not supported (they share the
// temporary's name: the second one's O_EXCL fails, or it unlinks the first one's file): give
// each writer (each rank) its own path.
//
// Reading (InputFile): refuses anything that is not a regular file (a FIFO, a device such as
// /dev/zero, a directory) before reading a byte, and knows the file's size up front, so a
// reader can compare it with what a header announces before reading the payload.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace steepest {

/// Every error of reading or writing an optimizer-state file (I/O, format, identity, values).
class state_file_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace io {

namespace detail {
inline std::string errno_text() { return std::strerror(errno); }
inline std::string directory_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}
}  // namespace detail

/// Writes a file through "<path>.tmp" and moves it into place durably (see the file comment).
class DurableWriter {
 public:
  /// Writes `path` atomically: to `path`.tmp, then fsync and rename at commit().
  explicit DurableWriter(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
    struct stat old;
    const bool replacing = ::lstat(path_.c_str(), &old) == 0;
    if (!replacing && errno != ENOENT)
      throw state_file_error("cannot write '" + path_ + "': " + detail::errno_text());
    if (replacing && S_ISLNK(old.st_mode))
      throw state_file_error("cannot write '" + path_ + "': it is a symbolic link (save to the file it names, or remove the link)");
    if (replacing && !S_ISREG(old.st_mode))
      throw state_file_error("cannot write '" + path_ + "': it exists and is not a regular file");
    if (::unlink(tmp_.c_str()) != 0 && errno != ENOENT)
      throw state_file_error("cannot write '" + tmp_ + "' (a stale temporary that cannot be removed): " + detail::errno_text());
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, replacing ? 0600 : 0666);
    if (fd_ < 0) throw state_file_error("cannot write '" + tmp_ + "': " + detail::errno_text());
    if (replacing) {
      // The old file's owner where the process may set it (root, or the same user); its mode
      // after, since chown may clear set-id bits.
      if (old.st_uid != ::geteuid() || old.st_gid != ::getegid()) (void)!::fchown(fd_, old.st_uid, old.st_gid);
      if (::fchmod(fd_, old.st_mode & 07777) != 0) fail("setting the permissions of");
    }
  }
  DurableWriter(const DurableWriter&) = delete;
  DurableWriter& operator=(const DurableWriter&) = delete;
  /// Not committed (an exception on the way): the temporary is closed and removed.
  ~DurableWriter() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(tmp_.c_str());
    }
  }

  /// Appends n bytes.
  void write(const void* data, std::size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail("writing");
      p += w;
      n -= std::size_t(w);
      written_ += std::uint64_t(w);
    }
  }
  /// Overwrites bytes already written at `offset` (a header field known only at the end).
  void write_at(std::uint64_t offset, const void* data, std::size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      const ssize_t w = ::pwrite(fd_, p, n, off_t(offset));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail("writing");
      p += w;
      n -= std::size_t(w);
      offset += std::uint64_t(w);
    }
  }
  /// Bytes written so far.
  std::uint64_t written() const { return written_; }

  /// fsync, close, rename over the target, fsync the directory.
  void commit() {
    if (::fsync(fd_) != 0) fail("fsync of");
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) {
      const std::string why = detail::errno_text();
      ::unlink(tmp_.c_str());
      throw state_file_error("closing '" + tmp_ + "' failed: " + why);
    }
    if (::rename(tmp_.c_str(), path_.c_str()) != 0) {
      const std::string why = detail::errno_text();
      ::unlink(tmp_.c_str());
      throw state_file_error("cannot rename '" + tmp_ + "' to '" + path_ + "': " + why);
    }
    const std::string dir = detail::directory_of(path_);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) throw state_file_error("saved '" + path_ + "' but cannot open its directory to fsync it: " + detail::errno_text());
    const int rc = ::fsync(dfd);
    const std::string why = rc != 0 ? detail::errno_text() : std::string();
    ::close(dfd);
    if (rc != 0) throw state_file_error("saved '" + path_ + "' but fsync of its directory failed: " + why);
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
  std::uint64_t written_ = 0;

  [[noreturn]] void fail(const char* what) {
    const std::string why = detail::errno_text();
    ::close(fd_);
    fd_ = -1;
    ::unlink(tmp_.c_str());
    throw state_file_error(std::string(what) + " '" + tmp_ + "' failed: " + why);
  }
};

/// A regular file opened for reading, with its size known before the first read.
class InputFile {
 public:
  /// Opens a regular file for reading (refuses FIFOs, devices and directories).
  explicit InputFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);  // O_NONBLOCK: a FIFO must not hang open()
    if (fd_ < 0) throw state_file_error("cannot open state file '" + path + "': " + detail::errno_text());
    struct stat sb;
    if (::fstat(fd_, &sb) != 0) {
      const std::string why = detail::errno_text();
      ::close(fd_);
      throw state_file_error("cannot stat state file '" + path + "': " + why);
    }
    if (!S_ISREG(sb.st_mode)) {
      ::close(fd_);
      throw state_file_error("state file '" + path + "' is not a regular file");
    }
    size_ = std::uint64_t(sb.st_size);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  ~InputFile() { ::close(fd_); }

  /// The file's size in bytes.
  std::uint64_t size() const { return size_; }
  /// Bytes read so far.
  std::uint64_t position() const { return pos_; }
  /// The path, for messages.
  const std::string& path() const { return path_; }

  /// Reads exactly n bytes at the current position; a short file throws ("truncated").
  void read(void* data, std::size_t n) {
    char* p = static_cast<char*>(data);
    while (n > 0) {
      const ssize_t r = ::read(fd_, p, n);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw state_file_error("reading state file '" + path_ + "' failed: " + detail::errno_text());
      if (r == 0) throw state_file_error("state file '" + path_ + "': truncated (it shrank while being read)");
      p += r;
      n -= std::size_t(r);
      pos_ += std::uint64_t(r);
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0, pos_ = 0;
};

/// The same writing interface into memory (a checkpoint inside another archive).
class MemoryWriter {
 public:
  /// Appends n bytes.
  void write(const void* data, std::size_t n) { bytes_.append(static_cast<const char*>(data), n); }
  /// Overwrites n bytes at offset.
  void write_at(std::uint64_t offset, const void* data, std::size_t n) {
    if (offset > bytes_.size() || n > bytes_.size() - offset) throw state_file_error("MemoryWriter: write past the end");
    std::memcpy(&bytes_[std::size_t(offset)], data, n);
  }
  /// The bytes written (moved out).
  std::string take() { return std::move(bytes_); }

 private:
  std::string bytes_;
};

/// The same reading interface over bytes in memory; `name` stands for the path in messages.
class MemoryReader {
 public:
  /// Reads `bytes`; `name` stands for the path in messages.
  MemoryReader(std::string_view bytes, std::string name) : bytes_(bytes), name_(std::move(name)) {}
  /// Size in bytes.
  std::uint64_t size() const { return bytes_.size(); }
  /// Bytes read so far.
  std::uint64_t position() const { return pos_; }
  /// The name given, for messages.
  const std::string& path() const { return name_; }
  /// Reads n bytes; throws at the end.
  void read(void* data, std::size_t n) {
    if (n > bytes_.size() - pos_) throw state_file_error("state file '" + name_ + "': truncated");
    if (n) std::memcpy(data, bytes_.data() + pos_, n);
    pos_ += n;
  }

 private:
  std::string_view bytes_;
  std::string name_;
  std::size_t pos_ = 0;
};

}  // namespace io
}  // namespace steepest
