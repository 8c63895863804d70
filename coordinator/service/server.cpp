// Boost.Beast HTTP/1.1 server of `shardq serve` (see server.hpp).
#include "coordinator/service/server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "common/error.hpp"

namespace shardq::service {

namespace beast = boost::beast;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace {

// Request line and header fields together, as Beast's parser counts them.
constexpr std::uint32_t header_limit_kib = 16;

void fail(beast::error_code ec, const char* what) {
  // Disconnects and timeouts of clients are routine; they are logged at debug level.
  if (ec == net::error::operation_aborted || ec == beast::error::timeout || ec == net::error::eof ||
      ec == net::error::connection_reset)
    spdlog::debug("{}", nlohmann::json{{"event", "http_" + std::string(what)}, {"error", ec.message()}}.dump());
  else
    spdlog::warn("{}", nlohmann::json{{"event", "http_" + std::string(what)}, {"error", ec.message()}}.dump());
}

// Open connections, shared by the listener and its sessions: a session counts from its
// construction to its destruction (the socket's close).
using connection_count = std::shared_ptr<std::atomic<int>>;

class session : public std::enable_shared_from_this<session> {
 public:
  session(tcp::socket&& socket, const ServerConfig& config, const Api& api, Metrics& metrics, connection_count open,
          net::thread_pool& files)
      : stream_(std::move(socket)), config_(config), api_(api), metrics_(metrics), files_(files), open_(std::move(open)),
        over_capacity_(open_->fetch_add(1) >= config.max_connections) {}
  ~session() { open_->fetch_sub(1); }

  void run() { net::dispatch(stream_.get_executor(), beast::bind_front_handler(&session::do_read, shared_from_this())); }

 private:
  // The header first: a body is read only for a request that may send one (the right token,
  // or a route open to all), so an unauthenticated client cannot make the server buffer
  // megabytes; a client waiting on "Expect: 100-continue" is told to go on.
  void do_read() {
    parser_.emplace();
    parser_->body_limit(config_.max_body_bytes);
    parser_->header_limit(header_limit_kib * 1024);
    // A connection over the cap is waited for 2 s at most: it holds a descriptor meanwhile.
    stream_.expires_after(over_capacity_ ? std::min<clock_type::duration>(config_.read_timeout, std::chrono::seconds(2))
                                         : clock_type::duration(config_.read_timeout));
    http::async_read_header(stream_, buffer_, *parser_, beast::bind_front_handler(&session::on_header, shared_from_this()));
  }

  void on_header(beast::error_code ec, std::size_t) {
    if (ec == http::error::end_of_stream) return do_close();
    const auto& header = parser_->get();
    method_ = std::string(header.method_string());
    target_ = std::string(header.target());
    start_ = clock_type::now();
    if (ec) return refuse_or_fail(ec);
    if (over_capacity_) {
      // Answered once its header is read, so that the client gets the 503 and not a reset.
      return send(error_response(503, "too_many_connections",
                                 fmt::format("the server holds its limit of {} connections; retry later",
                                             config_.max_connections),
                                 "", header.version(), false));
    }
    const bool has_body = header.chunked() || header.has_content_length();
    if (has_body && !api_.may_send_body(header)) {
      // The body is never read, so the connection cannot be reused.
      return send(error_response(401, "unauthorized", "missing or wrong bearer token", "", header.version(), false));
    }
    if (beast::iequals(header[http::field::expect], "100-continue")) {
      auto go_on = std::make_shared<http::response<http::empty_body>>(http::status::continue_, header.version());
      return http::async_write(stream_, *go_on, [self = shared_from_this(), go_on](beast::error_code write_ec, std::size_t) {
        if (write_ec) return fail(write_ec, "write");
        self->read_body();
      });
    }
    read_body();
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return refuse_or_fail(ec);
    if (!Api::reads_files(parser_->get())) return send(api_.handle_request(parser_->get()));
    // Answered on the files pool, then sent from this session's strand. Nothing else touches
    // the session meanwhile: no read or write of it is pending.
    net::post(files_, [self = shared_from_this()] {
      http_response res = self->api_.handle_request(self->parser_->get());
      net::post(self->stream_.get_executor(),
                [self, res = std::make_shared<http_response>(std::move(res))]() mutable { self->send(std::move(*res)); });
    });
  }

  void refuse_or_fail(beast::error_code ec) {
    if (ec == http::error::body_limit) {
      // The rest of the body is never read, so the connection cannot be reused.
      const unsigned version = parser_->get().version();
      return send(error_response(413, "payload_too_large",
                                 fmt::format("the body is larger than {} bytes", config_.max_body_bytes), "body",
                                 version ? version : 11, false));
    }
    // A request that is not HTTP/1.1 gets one answer before the connection closes; a client
    // that went away or was too slow gets none.
    if (ec == http::error::header_limit) {
      // No target parsed: the request line itself never ended within the limit, which RFC 9110
      // §15.5.15 answers 414 (the target is what grows); otherwise the fields did (RFC 6585 §5).
      if (parser_->get().target().empty())
        return send(error_response(414, "uri_too_long", fmt::format("the request line is longer than {} KiB", header_limit_kib),
                                   "", 11, false));
      return send(error_response(431, "header_too_large", fmt::format("the request header is larger than {} KiB", header_limit_kib),
                                 "", 11, false));
    }
    if (ec.category() == http::make_error_code(http::error::bad_target).category() && ec != http::error::partial_message)
      return send(error_response(400, "bad_request", fmt::format("not an HTTP/1.1 request: {}", ec.message()), "", 11, false));
    fail(ec, "read");
  }

  void send(http_response&& res) {
    res_ = std::make_shared<http_response>(std::move(res));
    stream_.expires_after(config_.read_timeout);
    http::async_write(stream_, *res_, beast::bind_front_handler(&session::on_write, shared_from_this(), res_->need_eof()));
  }

  void on_write(bool close, beast::error_code ec, std::size_t) {
    const double seconds = std::chrono::duration<double>(clock_type::now() - start_).count();
    const unsigned status = res_->result_int();
    const std::string route = route_label(target_);
    metrics_.record(method_, route, status, seconds);
    spdlog::info("{}", nlohmann::json{{"event", "request"}, {"method", method_}, {"route", route}, {"status", status},
                                      {"ms", seconds * 1e3}}
                           .dump());
    if (ec) return fail(ec, "write");
    if (close) return do_close();
    res_.reset();
    do_read();
  }

  // RFC 9112 §9.6: close the sending side only, and drain what the client still sends (a body
  // never read, a request after the last answer) until it closes or 2 s pass. Closing with
  // unread bytes makes the kernel reset the connection, and a reset can discard the answer
  // before the client has read it.
  void do_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return;
    stream_.expires_after(std::chrono::seconds(2));
    drain();
  }

  void drain() {
    stream_.async_read_some(net::buffer(discard_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (!ec) self->drain();
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  const ServerConfig& config_;
  const Api& api_;
  Metrics& metrics_;
  net::thread_pool& files_;  // requests that read files (Api::reads_files)
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<http_response> res_;
  std::string method_, target_;
  clock_type::time_point start_;
  connection_count open_;
  const bool over_capacity_;
  std::array<char, 4096> discard_;
};

class listener : public std::enable_shared_from_this<listener> {
 public:
  listener(net::io_context& ioc, tcp::endpoint endpoint, const ServerConfig& config, const Api& api, Metrics& metrics,
           net::thread_pool& files)
      : ioc_(ioc), acceptor_(net::make_strand(ioc)), retry_(acceptor_.get_executor()), config_(config), api_(api),
        metrics_(metrics), files_(files) {
    beast::error_code ec;
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec)
      throw io_error(fmt::format("cannot listen on {}:{}: {}", endpoint.address().to_string(), endpoint.port(), ec.message()));
  }

  unsigned short port() const { return acceptor_.local_endpoint().port(); }
  void run() { do_accept(); }
  void stop() {
    net::post(acceptor_.get_executor(), [self = shared_from_this()] {
      beast::error_code ec;
      self->acceptor_.close(ec);
      self->retry_.cancel();
    });
  }

 private:
  void do_accept() {
    acceptor_.async_accept(net::make_strand(ioc_), beast::bind_front_handler(&listener::on_accept, shared_from_this()));
  }

  void on_accept(beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted) return;
    if (ec == net::error::no_descriptors || ec == net::error::no_buffer_space || ec == net::error::no_memory) {
      // Out of file descriptors: accepting again at once fails again at once (a busy loop that
      // logged 46 MB in 6 s). Wait for connections to close; log once per episode.
      if (!accept_starved_) fail(ec, "accept");
      accept_starved_ = true;
      retry_.expires_after(std::chrono::milliseconds(100));
      retry_.async_wait([self = shared_from_this()](beast::error_code wait_ec) {
        if (!wait_ec) self->do_accept();
      });
      return;
    }
    accept_starved_ = false;
    if (ec) fail(ec, "accept");
    else std::make_shared<session>(std::move(socket), config_, api_, metrics_, open_, files_)->run();
    do_accept();
  }

  net::io_context& ioc_;
  tcp::acceptor acceptor_;
  net::steady_timer retry_;     // the next accept after running out of descriptors
  bool accept_starved_ = false;
  connection_count open_ = std::make_shared<std::atomic<int>>(0);
  const ServerConfig& config_;
  const Api& api_;
  Metrics& metrics_;
  net::thread_pool& files_;
};

}  // namespace

void http_serve(const ServerConfig& config, const Api& api, Metrics& metrics,
                const std::function<void(unsigned short)>& on_listening) {
  const int threads = std::max(1, config.threads);
  net::io_context ioc{threads};
  // Destroyed before ioc: its running handlers end first, and what they post back to a
  // stopped ioc is dropped with it.
  net::thread_pool files(static_cast<std::size_t>(std::max(2, threads)));
  beast::error_code ec;
  const auto address = net::ip::make_address(config.address, ec);
  if (ec) throw spec_error("listen", fmt::format("'{}' is not an IP address", config.address));
  auto l = std::make_shared<listener>(ioc, tcp::endpoint{address, config.port}, config, api, metrics, files);
  l->run();
  if (on_listening) on_listening(l->port());

  net::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code, int sig) {
    spdlog::info("{}", nlohmann::json{{"event", "shutdown"}, {"signal", sig}}.dump());
    l->stop();
    ioc.stop();
  });
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& t : pool) t.join();
  files.stop();  // what has not started is dropped; what runs (a stalled read) is waited for
  files.join();
}

}  // namespace shardq::service
