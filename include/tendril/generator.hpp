// tendril/generator.hpp — Python-style generators built on greenlets.
//
//   tendril::generator<int> inner([](tendril::yielder<int>& yield) { yield(3); yield(4); });
//   tendril::generator<int> outer([&](tendril::yielder<int>& yield) {
//     yield(1);
//     yield.from(inner);   // Python's `yield from`
//     yield(2);
//   });
//   for (int x : outer) std::printf("%d\n", x);   // 1 3 4 2
//
// The body runs on its own greenlet (its own stack) and can call yield from any depth of nested calls.
// Consume with range-for or next() (std::nullopt once the body has returned). An exception thrown by the body
// reaches the consumer at the next()/iteration that resumed it. Destroying a generator that has not finished
// kills its greenlet: greenlet_exit is thrown at the pending yield so the body's destructors run.
//
// A generator belongs to the thread or task that created it; consuming it elsewhere throws greenlet_error.
// It is move-only.
#pragma once

#include <cstddef>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <utility>

#include "tendril/greenlet.hpp"

namespace tendril {

template <class T>
class generator;

// Handed to a generator's body: call it to produce a value.
template <class T>
class yielder {
 public:
  // Hands `v` to the consumer and suspends the body until the next value is asked for.
  // Throws greenlet_error when called while the generator is not running its body.
  void operator()(T v) {
    if (!state_->consumer) throw greenlet_error("yield called outside its generator's body");
    state_->slot.emplace(std::move(v));
    // Switch to whoever asked for the value. The handle lives in the shared state, owned by next(), which drops
    // it as soon as it has control back: the suspended body keeps no reference to its consumer on its stack
    // (that would be a cycle when the consumer owns the generator, e.g. a body delegating to a local generator,
    // and neither could then be unwound when dropped). switch_() does not touch the handle after resuming.
    state_->consumer->switch_();
  }
  // Yields every value of `other` (Python's `yield from`).
  void from(generator<T>& other) {
    while (std::optional<T> v = other.next()) (*this)(std::move(*v));
  }
  void from(generator<T>&& other) { from(other); }

 private:
  friend class generator<T>;
  struct state {
    std::optional<T> slot;
    std::optional<greenlet> consumer;  // set while the body runs (inside next())
  };
  explicit yielder(std::shared_ptr<state> s) : state_(std::move(s)) {}
  std::shared_ptr<state> state_;
};

template <class T>
class generator {
 public:
  using body_type = std::function<void(yielder<T>&)>;

  explicit generator(body_type body, stack_options stack = {})
      : state_(std::make_shared<typename yielder<T>::state>()),
        body_(make_body(state_, std::move(body)), std::nullopt, std::move(stack)),
        root_(root_of(greenlet::current())) {}

  generator(generator&&) noexcept = default;
  generator& operator=(generator&&) noexcept = default;
  generator(const generator&) = delete;
  generator& operator=(const generator&) = delete;

  // The next value, or std::nullopt once the body has returned. Rethrows what the body throws. Throws
  // greenlet_error on a moved-from generator, and when called while its body runs (from the body itself, or
  // yield.from() of itself: Python's "generator already executing").
  std::optional<T> next() {
    if (!state_) throw greenlet_error("next() on a moved-from generator");
    if (state_->consumer) throw greenlet_error("generator already executing: next() called from inside its own body");
    if (body_.dead()) return std::nullopt;
    greenlet me = greenlet::current();
    body_.set_parent(me);  // where the body's return or exception goes
    state_->slot.reset();
    // Between values, neither the body's parent nor the shared state refers to the consumer: a consumer that
    // keeps this generator on its own stack (a generator body delegating to a local generator) would otherwise
    // be kept alive by its own generator, a cycle that stops both from being unwound when they are dropped.
    struct park {
      greenlet& body;
      const greenlet& root;
      std::optional<greenlet>& consumer;
      ~park() {
        consumer.reset();
        body.set_parent(root);  // cannot throw: same domain, and root has no parent
      }
    } parked{body_, root_, state_->consumer};
    state_->consumer.emplace(std::move(me));
    body_.switch_();
    std::optional<T> v = std::move(state_->slot);
    state_->slot.reset();
    return v;
  }

  // True once the body has returned or thrown.
  bool done() const noexcept { return body_.dead(); }

  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using pointer = T*;
    using reference = T&;

    iterator() = default;
    explicit iterator(generator* g) : gen_(g) { advance(); }
    T& operator*() { return *current_; }
    T* operator->() { return &*current_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    void operator++(int) { advance(); }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return !it.current_.has_value(); }

   private:
    void advance() { current_ = gen_->next(); }
    generator* gen_ = nullptr;
    std::optional<T> current_;
  };

  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  static greenlet root_of(greenlet g) {
    while (std::optional<greenlet> p = g.parent()) g = std::move(*p);
    return g;
  }

  static auto make_body(std::shared_ptr<typename yielder<T>::state> st, body_type body) {
    return [st = std::move(st), body = std::move(body)]() mutable {
      yielder<T> y(st);
      body(y);
    };
  }

  std::shared_ptr<typename yielder<T>::state> state_;
  greenlet body_;
  greenlet root_;  // the main greenlet of the thread or task that created the generator
};

}  // namespace tendril
