//! The protobuf codec both sides use: prost's, except that a message that cannot be
//! decoded is the sender's fault (`INVALID_ARGUMENT`, not prost's `INTERNAL`) and is
//! counted, so a collector can show how many malformed requests it was sent.

use std::marker::PhantomData;
// `AtomicUsize`, not `AtomicU64`: 32-bit MIPS routers have no 64-bit atomics.
use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

static DECODE_ERRORS: AtomicUsize = AtomicUsize::new(0);

/// Messages this process could not decode since it started.
pub fn decode_errors() -> u64 {
    DECODE_ERRORS.load(Ordering::Relaxed) as u64
}

#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec {
            inner: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = CountingDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CountingDecoder {
            inner: self.inner.decoder(),
            _pd: PhantomData,
        }
    }
}

#[derive(Debug)]
pub struct CountingDecoder<U> {
    inner: ProstDecoder<U>,
    _pd: PhantomData<U>,
}

impl<U: prost::Message + Default> Decoder for CountingDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|e| {
            DECODE_ERRORS.fetch_add(1, Ordering::Relaxed);
            Status::invalid_argument(format!(
                "the message is not a valid tps.v1 protobuf message: {}",
                e.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
