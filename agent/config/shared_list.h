// A list of immutable objects shared between copies of the list.
//
// A ClusterState is copied on every published update: the Kubernetes source
// keeps its store, the agent hands one copy to the policy index, the admin
// API another. With 10,000 pods, copying the objects themselves was the
// source's whole cost per watch event (issue 12); copying a SharedList copies
// pointers. Reading looks like a std::vector<T> of const objects; the one way
// to change an object in place, edit(), copies it first when another list
// shares it (copy on write), so no reader ever sees an object change.
#pragma once

#include <compare>
#include <cstddef>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <utility>
#include <vector>

namespace meshlock::config {

template <typename T>
class SharedList {
  using Handles = std::vector<std::shared_ptr<const T>>;

 public:
  using value_type = T;
  using size_type = std::size_t;
  using Handle = std::shared_ptr<const T>;

  class const_iterator {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using iterator_concept = std::random_access_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = const T*;
    using reference = const T&;

    const_iterator() = default;
    explicit const_iterator(typename Handles::const_iterator it) : it_(it) {}
    reference operator*() const { return **it_; }
    pointer operator->() const { return it_->get(); }
    reference operator[](difference_type n) const { return *it_[n]; }
    const_iterator& operator++() { ++it_; return *this; }
    const_iterator operator++(int) { return const_iterator(it_++); }
    const_iterator& operator--() { --it_; return *this; }
    const_iterator operator--(int) { return const_iterator(it_--); }
    const_iterator& operator+=(difference_type n) { it_ += n; return *this; }
    const_iterator& operator-=(difference_type n) { it_ -= n; return *this; }
    friend const_iterator operator+(const_iterator i, difference_type n) { return i += n; }
    friend const_iterator operator+(difference_type n, const_iterator i) { return i += n; }
    friend const_iterator operator-(const_iterator i, difference_type n) { return i -= n; }
    friend difference_type operator-(const const_iterator& a, const const_iterator& b) { return a.it_ - b.it_; }
    bool operator==(const const_iterator&) const = default;
    auto operator<=>(const const_iterator&) const = default;
    // The shared object itself, to keep it beyond this list.
    [[nodiscard]] const Handle& handle() const { return *it_; }

   private:
    typename Handles::const_iterator it_;
  };
  using iterator = const_iterator;

  SharedList() = default;
  SharedList(std::initializer_list<T> values) {
    items_.reserve(values.size());
    for (const T& v : values) push_back(v);
  }

  void push_back(T value) { items_.push_back(std::make_shared<T>(std::move(value))); }
  void push_back(Handle handle) { items_.push_back(std::move(handle)); }
  template <typename... Args>
  const T& emplace_back(Args&&... args) {
    items_.push_back(std::make_shared<T>(std::forward<Args>(args)...));
    return *items_.back();
  }
  // Appends every object of `other`, shared.
  void append(const SharedList& other) { items_.insert(items_.end(), other.items_.begin(), other.items_.end()); }

  // The object at `i`, to change: copied first when another list shares it.
  T& edit(size_type i) {
    Handle& h = items_[i];
    if (h.use_count() != 1) h = std::make_shared<T>(*h);
    // Every object is made non-const by this class (make_shared<T>), so
    // changing one that no other list holds is well defined.
    return const_cast<T&>(*h);
  }
  T& editBack() { return edit(items_.size() - 1); }

  template <typename Pred>
  size_type eraseIf(Pred pred) {
    return std::erase_if(items_, [&](const Handle& h) { return pred(*h); });
  }
  void clear() { items_.clear(); }
  void reserve(size_type n) { items_.reserve(n); }

  [[nodiscard]] size_type size() const { return items_.size(); }
  [[nodiscard]] bool empty() const { return items_.empty(); }
  [[nodiscard]] const T& operator[](size_type i) const { return *items_[i]; }
  [[nodiscard]] const T& front() const { return *items_.front(); }
  [[nodiscard]] const T& back() const { return *items_.back(); }
  [[nodiscard]] const Handle& handle(size_type i) const { return items_[i]; }
  [[nodiscard]] const_iterator begin() const { return const_iterator(items_.begin()); }
  [[nodiscard]] const_iterator end() const { return const_iterator(items_.end()); }

  // By value, as a vector of T compares; the same shared object is equal to itself.
  bool operator==(const SharedList& other) const {
    if (items_.size() != other.items_.size()) return false;
    for (size_type i = 0; i < items_.size(); ++i) {
      if (items_[i] != other.items_[i] && !(*items_[i] == *other.items_[i])) return false;
    }
    return true;
  }

 private:
  Handles items_;
};

}  // namespace meshlock::config
