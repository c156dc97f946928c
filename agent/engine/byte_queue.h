// A FIFO of bytes in fixed-size chunks: appends never move bytes already
// queued, so an in-flight send may point into it while more is appended.
// Chunks are freed as soon as they are consumed: an idle queue owns no memory.
#pragma once

#include <sys/uio.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

namespace meshlock::engine {

class ByteQueue {
 public:
  static constexpr size_t kChunkSize = 16 * 1024;

  [[nodiscard]] size_t size() const { return size_; }
  [[nodiscard]] bool empty() const { return size_ == 0; }

  void append(std::span<const std::byte> data) {
    while (!data.empty()) {
      std::span<std::byte> tail = writableTail();
      size_t n = std::min(tail.size(), data.size());
      std::memcpy(tail.data(), data.data(), n);
      commit(n);
      data = data.subspan(n);
    }
  }

  // Free space at the end (allocating a chunk if needed); fill it, then commit().
  [[nodiscard]] std::span<std::byte> writableTail() {
    if (chunks_.size() == head_ || chunks_.back().end == kChunkSize) {
      chunks_.push_back(Chunk{std::make_unique_for_overwrite<std::byte[]>(kChunkSize), 0, 0});
    }
    Chunk& last = chunks_.back();
    return {last.data.get() + last.end, kChunkSize - last.end};
  }
  void commit(size_t n) {
    chunks_.back().end += n;
    size_ += n;
  }

  // Up to `max` iovecs describing the front of the queue.
  int frontIovecs(iovec* out, int max) const {
    int count = 0;
    for (size_t i = head_; i < chunks_.size() && count < max; ++i) {
      const Chunk& c = chunks_[i];
      if (c.end == c.begin) continue;
      out[count++] = iovec{c.data.get() + c.begin, c.end - c.begin};
    }
    return count;
  }

  // Copies up to out.size() bytes starting `offset` bytes from the front,
  // consuming nothing (e.g. a TLS record header not yet whole).
  size_t peek(size_t offset, std::span<std::byte> out) const {
    size_t done = 0;
    for (size_t i = head_; i < chunks_.size() && done < out.size(); ++i) {
      const Chunk& c = chunks_[i];
      const size_t length = c.end - c.begin;
      if (offset >= length) {
        offset -= length;
        continue;
      }
      const size_t n = std::min(out.size() - done, length - offset);
      std::memcpy(out.data() + done, c.data.get() + c.begin + offset, n);
      done += n;
      offset = 0;
    }
    return done;
  }

  // Copies up to out.size() bytes from the front and consumes them.
  size_t read(std::span<std::byte> out) {
    size_t done = 0;
    while (done < out.size() && size_ > 0) {
      Chunk& c = chunks_[head_];
      size_t n = std::min(out.size() - done, c.end - c.begin);
      std::memcpy(out.data() + done, c.data.get() + c.begin, n);
      done += n;
      consume(n);
    }
    return done;
  }

  void consume(size_t n) {
    size_ -= n;
    while (n > 0) {
      Chunk& c = chunks_[head_];
      size_t take = std::min(n, c.end - c.begin);
      c.begin += take;
      n -= take;
      if (c.begin == c.end && (c.end == kChunkSize || size_ == 0)) {
        c.data.reset();
        ++head_;
      }
    }
    if (head_ == chunks_.size()) {
      clear();
    } else if (head_ > 32 && head_ * 2 > chunks_.size()) {
      chunks_.erase(chunks_.begin(), chunks_.begin() + static_cast<std::ptrdiff_t>(head_));
      head_ = 0;
    }
  }

  // Everything queued, as one buffer; the queue is left empty.
  [[nodiscard]] std::vector<std::byte> takeAll() {
    std::vector<std::byte> bytes(size_);
    read(bytes);
    clear();
    return bytes;
  }

  // Frees everything, the chunk list included: an idle connection has several queues.
  void clear() {
    std::vector<Chunk>().swap(chunks_);
    head_ = 0;
    size_ = 0;
  }
  // Frees a chunk writableTail() allocated that nothing was committed to.
  void releaseIfEmpty() {
    if (size_ == 0 && !chunks_.empty()) clear();
  }

 private:
  struct Chunk {
    std::unique_ptr<std::byte[]> data;
    size_t begin;
    size_t end;
  };
  std::vector<Chunk> chunks_;
  size_t head_ = 0;
  size_t size_ = 0;
};

}  // namespace meshlock::engine
