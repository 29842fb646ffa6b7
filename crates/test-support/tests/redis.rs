//! The real Redis behaves as Courier expects: reachable at `url()`, and with AOF +
//! `appendfsync always`, acknowledged writes survive a SIGKILL.

use courier_test_support::RedisServer;
use redis::Commands;

fn connect(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .expect("valid redis url")
        .get_connection()
        .expect("connect to redis")
}

#[test]
fn answers_ping() {
    let started = std::time::Instant::now();
    let server = RedisServer::start().expect("start redis");
    eprintln!("redis started in {:?}", started.elapsed());
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/0", server.port())
    );
    let mut con = connect(&server);
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG");
}

#[test]
fn data_survives_kill_and_restart() {
    let mut server = RedisServer::start().expect("start redis");
    let port = server.port();
    {
        let mut con = connect(&server);
        let () = con.set("test:value", "before-kill").expect("SET");
        let () = con.rpush("test:list", &[1, 2, 3]).expect("RPUSH");
    }

    server.kill();
    assert!(!server.is_running());
    let refused = redis::Client::open(server.url()).unwrap().get_connection();
    assert!(refused.is_err(), "redis still reachable after kill");

    let started = std::time::Instant::now();
    server.restart().expect("restart redis");
    eprintln!("redis restarted in {:?}", started.elapsed());
    assert_eq!(server.port(), port, "restart keeps the port");
    let mut con = connect(&server);
    let value: String = con.get("test:value").expect("GET");
    assert_eq!(value, "before-kill");
    let list: Vec<i64> = con.lrange("test:list", 0, -1).expect("LRANGE");
    assert_eq!(list, [1, 2, 3]);
}

#[test]
fn servers_are_independent() {
    let a = RedisServer::start().expect("start redis a");
    let b = RedisServer::start().expect("start redis b");
    assert_ne!(a.port(), b.port());
    let () = connect(&a).set("only-in-a", 1).expect("SET");
    let exists: bool = connect(&b).exists("only-in-a").expect("EXISTS");
    assert!(!exists);
}

#[test]
fn the_shared_server_is_one_per_process() {
    let a = RedisServer::shared();
    let b = RedisServer::shared();
    assert_eq!(a.port(), b.port());
    let pong: String = redis::cmd("PING").query(&mut connect(a)).expect("PING");
    assert_eq!(pong, "PONG");
}
