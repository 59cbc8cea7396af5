//! A restricted reader for the pickle inside a PyTorch checkpoint (`data.pkl` of the zip
//! that `torch.save` writes): it understands the opcodes a state dict uses and accepts only
//! the globals that rebuild tensors and ordered dicts. Nothing is ever called or imported;
//! any other global (the usual vehicle of a hostile pickle) is refused by name.
//!
//! What comes out is a list of tensor records (name, dtype, shape, which storage and where
//! in it); the storages themselves are zip entries read by `pytorch.rs`.

use std::collections::HashMap;

use candle_core::DType;

/// Why a pickle was refused; the caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PickleError(pub String);

fn bad(msg: impl Into<String>) -> PickleError {
    PickleError(msg.into())
}

type Res<T> = std::result::Result<T, PickleError>;

/// Values created or copied while reading, at most: a memo entry fetched again and again
/// must not grow a small file into a huge object graph.
const NODE_BUDGET: usize = 20_000_000;

/// Dimensions a tensor may have.
const MAX_RANK: usize = 8;

/// One tensor of a state dict as the pickle describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRecord {
    /// Element type of the storage.
    pub dtype: DType,
    /// The storage's key: its zip entry is `<archive>/data/<key>`.
    pub storage: String,
    /// Elements in the whole storage (as the pickle claims; checked against the entry).
    pub storage_len: usize,
    /// First element of this tensor within the storage.
    pub offset: usize,
    /// Dimensions.
    pub shape: Vec<usize>,
}

impl TensorRecord {
    /// Elements of the tensor.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The globals a state dict may name.
#[derive(Debug, Clone, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildParameter,
    Storage(DType),
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage {
        dtype: DType,
        key: String,
        len: usize,
    },
    Tensor(TensorRecord),
}

impl Value {
    /// Values in this one, itself included (what a copy costs).
    fn nodes(&self) -> usize {
        1 + match self {
            Self::Tuple(v) | Self::List(v) => v.iter().map(Value::nodes).sum(),
            Self::Dict(v) => v.iter().map(|(k, v)| k.nodes() + v.nodes()).sum(),
            _ => 0,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Bool(_) => "bool",
            Self::Int(_) => "int",
            Self::Float(_) => "float",
            Self::Str(_) => "str",
            Self::Tuple(_) => "tuple",
            Self::List(_) => "list",
            Self::Dict(_) => "dict",
            Self::Global(_) => "global",
            Self::Storage { .. } => "storage",
            Self::Tensor(_) => "tensor",
        }
    }
}

/// The globals accepted, by `module.name`.
fn global(module: &str, name: &str) -> Res<Global> {
    let storage = |d| Ok(Global::Storage(d));
    match (module, name) {
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Ok(Global::RebuildParameter),
        ("torch", "HalfStorage") => storage(DType::F16),
        ("torch", "BFloat16Storage") => storage(DType::BF16),
        ("torch", "FloatStorage") => storage(DType::F32),
        ("torch", "DoubleStorage") => storage(DType::F64),
        ("torch", "LongStorage") => storage(DType::I64),
        ("torch", "IntStorage") => storage(DType::I32),
        ("torch", "ByteStorage") => storage(DType::U8),
        _ => Err(bad(format!(
            "the pickle names `{module}.{name}`, which a checkpoint of tensors never needs; \
             refused (only tensors, their storages and ordered dicts are accepted)"
        ))),
    }
}

/// The reader's state: the input, the stack, marks and memo.
struct Machine<'a> {
    data: &'a [u8],
    at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    nodes: usize,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| bad("the pickle ends in the middle of an opcode"))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut b = [0u8; N];
        b.copy_from_slice(self.take(N)?);
        Ok(b)
    }

    fn line(&mut self) -> Res<String> {
        let rest = &self.data[self.at..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| bad("a GLOBAL's name has no end of line"))?;
        let s =
            std::str::from_utf8(self.take(n)?).map_err(|_| bad("a GLOBAL name is not UTF-8"))?;
        self.at += 1;
        Ok(s.to_string())
    }

    fn text(&mut self, n: usize) -> Res<Value> {
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| bad("a string is not UTF-8"))?;
        Ok(Value::Str(s.to_string()))
    }

    fn charge(&mut self, n: usize) -> Res<()> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > NODE_BUDGET {
            return Err(bad("the pickle builds more values than a state dict has"));
        }
        Ok(())
    }

    fn push(&mut self, v: Value) -> Res<()> {
        self.charge(1)?;
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> Res<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err(bad("an opcode reaches past a MARK"));
        }
        self.stack
            .pop()
            .ok_or_else(|| bad("the pickle's stack runs empty"))
    }

    fn top(&mut self) -> Res<&mut Value> {
        self.stack
            .last_mut()
            .ok_or_else(|| bad("the pickle's stack runs empty"))
    }

    fn pop_mark(&mut self) -> Res<Vec<Value>> {
        let m = self.marks.pop().ok_or_else(|| bad("no MARK to pop to"))?;
        if m > self.stack.len() {
            return Err(bad("a MARK lies above the stack"));
        }
        Ok(self.stack.split_off(m))
    }

    fn put(&mut self, key: u32) -> Res<()> {
        let v = self
            .stack
            .last()
            .cloned()
            .ok_or_else(|| bad("PUT on an empty stack"))?;
        self.charge(v.nodes())?;
        self.memo.insert(key, v);
        Ok(())
    }

    fn get(&mut self, key: u32) -> Res<()> {
        let v = self.memo.get(&key).cloned();
        let v = v.ok_or_else(|| bad(format!("memo entry {key} was never stored")))?;
        self.charge(v.nodes())?;
        self.stack.push(v);
        Ok(())
    }

    fn tuple(&mut self, n: usize) -> Res<()> {
        let len = self.stack.len();
        let floor = self.marks.last().copied().unwrap_or(0);
        if len < n || len - n < floor {
            return Err(bad("a TUPLE opcode reaches past the stack"));
        }
        let items = self.stack.split_off(len - n);
        self.push(Value::Tuple(items))
    }

    fn set_items(&mut self, items: Vec<Value>) -> Res<()> {
        if !items.len().is_multiple_of(2) {
            return Err(bad("SETITEMS with an odd number of values"));
        }
        let Value::Dict(d) = self.top()? else {
            return Err(bad("SETITEM(S) on something that is not a dict"));
        };
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> Res<()> {
        match self.top()? {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            other => Err(bad(format!("APPEND to a {}", other.kind()))),
        }
    }

    /// One opcode; `Ok(false)` at STOP.
    fn step(&mut self) -> Res<bool> {
        let op = self.u8()?;
        match op {
            b'.' => return Ok(false),
            0x80 => {
                self.u8()?; // PROTO: the version does not change what follows.
            }
            0x95 => {
                self.le::<8>()?; // FRAME: a length hint only.
            }
            b'(' => self.marks.push(self.stack.len()),
            b'q' | b'r' | 0x94 | b'h' | b'j' => self.memo_op(op)?,
            b't' | 0x85 | 0x86 | 0x87 | b'l' | b'd' | b'a' | b'e' | b's' | b'u' => {
                self.container_op(op)?
            }
            b'c' | 0x93 | b'Q' | b'R' | b'b' => self.object_op(op)?,
            _ => {
                let v = self.constant(op)?;
                self.push(v)?
            }
        }
        Ok(true)
    }

    /// Opcodes that push a constant: none, booleans, integers, floats, strings, and the
    /// empty containers.
    fn constant(&mut self, op: u8) -> Res<Value> {
        Ok(match op {
            b'}' => Value::Dict(Vec::new()),
            b']' => Value::List(Vec::new()),
            b')' => Value::Tuple(Vec::new()),
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'K' => Value::Int(self.u8()?.into()),
            b'M' => Value::Int(u16::from_le_bytes(self.le()?).into()),
            b'J' => Value::Int(i32::from_le_bytes(self.le()?).into()),
            0x8a => self.long1()?,
            b'G' => Value::Float(f64::from_be_bytes(self.le()?)),
            b'X' | b'T' => {
                let n = u32::from_le_bytes(self.le()?) as usize;
                self.text(n)?
            }
            0x8c | b'U' => {
                let n = self.u8()? as usize;
                self.text(n)?
            }
            other => {
                return Err(bad(format!(
                    "opcode 0x{other:02x} at byte {} is not one a tensor checkpoint uses; refused",
                    self.at - 1
                )))
            }
        })
    }

    /// PUT and GET in their widths (and MEMOIZE).
    fn memo_op(&mut self, op: u8) -> Res<()> {
        match op {
            b'q' => {
                let k = self.u8()?;
                self.put(k.into())
            }
            b'r' => {
                let k = u32::from_le_bytes(self.le()?);
                self.put(k)
            }
            0x94 => {
                let k = u32::try_from(self.memo.len()).map_err(|_| bad("memo overflow"))?;
                self.put(k)
            }
            b'h' => {
                let k = self.u8()?;
                self.get(k.into())
            }
            _ => {
                let k = u32::from_le_bytes(self.le()?);
                self.get(k)
            }
        }
    }

    /// Tuples, lists and dicts built from the stack or filled from it.
    fn container_op(&mut self, op: u8) -> Res<()> {
        match op {
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items))
            }
            0x85 => self.tuple(1),
            0x86 => self.tuple(2),
            0x87 => self.tuple(3),
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(items))
            }
            b'd' => {
                let items = self.pop_mark()?;
                self.push(Value::Dict(Vec::new()))?;
                self.set_items(items)
            }
            b'a' => {
                let v = self.pop()?;
                self.append(vec![v])
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.append(items)
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])
            }
            _ => {
                let items = self.pop_mark()?;
                self.set_items(items)
            }
        }
    }

    /// Globals (checked against the accepted ones), persistent ids, calls and BUILD.
    fn object_op(&mut self, op: u8) -> Res<()> {
        match op {
            b'c' => {
                let (module, name) = (self.line()?, self.line()?);
                self.push(Value::Global(global(&module, &name)?))
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => self.push(Value::Global(global(&m, &n)?)),
                    _ => Err(bad("STACK_GLOBAL without two strings")),
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let s = storage(pid)?;
                self.push(s)
            }
            b'R' => {
                let args = self.pop()?;
                let f = self.pop()?;
                let v = reduce(f, args)?;
                self.push(v)
            }
            _ => {
                // BUILD: an ordered dict's instance state (`_metadata`), which holds
                // nothing a loader needs; anything else has no state to take.
                let _state = self.pop()?;
                if !matches!(self.top()?, Value::Dict(_)) {
                    return Err(bad("BUILD on something that is not a dict"));
                }
                Ok(())
            }
        }
    }

    fn long1(&mut self) -> Res<Value> {
        let n = self.u8()? as usize;
        if n > 8 {
            return Err(bad("an integer wider than 64 bits"));
        }
        let bytes = self.take(n)?;
        let mut buf = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
            [0xffu8; 8]
        } else {
            [0u8; 8]
        };
        buf[..n].copy_from_slice(bytes);
        Ok(Value::Int(i64::from_le_bytes(buf)))
    }
}

/// A persistent id: `("storage", <StorageType>, key, location, numel)`.
fn storage(pid: Value) -> Res<Value> {
    let Value::Tuple(items) = pid else {
        return Err(bad("a persistent id that is not a tuple"));
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), Value::Str(_), Value::Int(len)]
            if tag == "storage" =>
        {
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(bad(format!("storage key `{key}` is not a plain name")));
            }
            let len = usize::try_from(*len).map_err(|_| bad("a storage of negative size"))?;
            Ok(Value::Storage {
                dtype: *dtype,
                key: key.clone(),
                len,
            })
        }
        _ => Err(bad(
            "a persistent id that is not (\"storage\", type, key, location, size)",
        )),
    }
}

/// Applies an accepted global to its arguments.
fn reduce(f: Value, args: Value) -> Res<Value> {
    let (Value::Global(g), Value::Tuple(args)) = (f, args) else {
        return Err(bad("REDUCE of something that is not an accepted global"));
    };
    match g {
        Global::OrderedDict => match args.as_slice() {
            [] => Ok(Value::Dict(Vec::new())),
            _ => Err(bad("OrderedDict built with arguments")),
        },
        Global::RebuildTensor => rebuild_tensor(args),
        Global::RebuildParameter => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err(bad("_rebuild_parameter without a tensor")),
        },
        Global::Storage(_) => Err(bad("a storage type called as a function")),
    }
}

fn ints(v: &Value, what: &str) -> Res<Vec<usize>> {
    let Value::Tuple(items) = v else {
        return Err(bad(format!("a tensor's {what} is not a tuple")));
    };
    if items.len() > MAX_RANK {
        return Err(bad(format!("a tensor of more than {MAX_RANK} dimensions")));
    }
    items
        .iter()
        .map(|i| match i {
            Value::Int(n) => usize::try_from(*n).map_err(|_| bad(format!("a negative {what}"))),
            _ => Err(bad(format!("a tensor's {what} holds a non-integer"))),
        })
        .collect()
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`:
/// only contiguous row-major tensors lying inside their storage.
fn rebuild_tensor(args: Vec<Value>) -> Res<Value> {
    let (storage, offset, size, stride) = match args.as_slice() {
        [s, Value::Int(o), size, stride, ..] if args.len() >= 6 => (s, *o, size, stride),
        _ => return Err(bad("_rebuild_tensor_v2 with unexpected arguments")),
    };
    let Value::Storage { dtype, key, len } = storage else {
        return Err(bad("_rebuild_tensor_v2 without a storage"));
    };
    let shape = ints(size, "size")?;
    let stride = ints(stride, "stride")?;
    let offset = usize::try_from(offset).map_err(|_| bad("a negative storage offset"))?;
    if stride.len() != shape.len() {
        return Err(bad("a tensor's size and stride differ in length"));
    }
    let mut expect = 1usize;
    for (&d, &s) in shape.iter().zip(&stride).rev() {
        if d > 1 && s != expect {
            return Err(bad(
                "a tensor that is not contiguous (a view); save the checkpoint with contiguous tensors",
            ));
        }
        expect = expect
            .checked_mul(d)
            .ok_or_else(|| bad("a tensor's size overflows"))?;
    }
    let end = offset.checked_add(expect).filter(|&e| e <= *len);
    if end.is_none() {
        return Err(bad("a tensor reaches past the end of its storage"));
    }
    Ok(Value::Tensor(TensorRecord {
        dtype: *dtype,
        storage: key.clone(),
        storage_len: *len,
        offset,
        shape,
    }))
}

/// Reads a state-dict pickle into its tensors, by name, in the order they appear.
pub fn parse(data: &[u8]) -> Result<Vec<(String, TensorRecord)>, PickleError> {
    let mut m = Machine {
        data,
        at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        nodes: 0,
    };
    while m.step()? {}
    let top = m.stack.pop().ok_or_else(|| bad("the pickle is empty"))?;
    let Value::Dict(items) = top else {
        return Err(bad(format!(
            "the checkpoint holds a {}, not a dict of tensors (a state dict)",
            top.kind()
        )));
    };
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(name), Value::Tensor(t)) => {
                if !seen.insert(name.clone()) {
                    return Err(bad(format!("tensor `{name}` appears twice")));
                }
                Ok((name, t))
            }
            (Value::Str(name), v) => Err(bad(format!(
                "entry `{name}` is a {}, not a tensor",
                v.kind()
            ))),
            (k, _) => Err(bad(format!("a state-dict key that is a {}", k.kind()))),
        })
        .collect()
}
