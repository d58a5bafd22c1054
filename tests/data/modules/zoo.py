"""Hand-written PyTorch modules as the common definitions write them, for `mncompile import`."""

import torch
import torch.nn.functional as F
from torch import nn

# ------------------------------------------------------------------ VGG (torchvision's configurations)

CFG = {"vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
       "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]}


def _features(cfg, batch_norm=True, conv_bias=False, in_channels=3):
    layers = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1, bias=conv_bias))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """torchvision's VGG: a 7x7 adaptive pool, then a 4096-4096 head with dropout."""

    def __init__(self, cfg="vgg11", num_classes=10, batch_norm=True):
        super().__init__()
        self.features = _features(CFG[cfg], batch_norm=batch_norm, conv_bias=True)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
                                        nn.Linear(4096, num_classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class CifarVGG(nn.Module):
    """VGG in the family's conventions: bias-free convs before BN, global average pooling, a small head."""

    def __init__(self, cfg="vgg16", num_classes=10):
        super().__init__()
        self.features = _features(CFG[cfg])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes))

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def vgg11_torchvision():
    return VGG("vgg11")


def vgg16_cifar():
    return CifarVGG("vgg16")


# ------------------------------------------------------------------ CIFAR ResNets (He et al.)


class LambdaLayer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, planes, stride=1, option="B"):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            if option == "A":
                pad = planes // 4
                self.shortcut = LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad)))
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, n=3, num_classes=10, option="B"):
        super().__init__()
        self.cin = 16
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, n, 1, option)
        self.layer2 = self._stage(32, n, 2, option)
        self.layer3 = self._stage(64, n, 2, option)
        self.linear = nn.Linear(64, num_classes)

    def _stage(self, planes, n, stride, option):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.cin, planes, s, option))
            self.cin = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(out.view(out.size(0), -1))


def resnet20():
    return ResNet(3, option="B")


def resnet20_option_a():
    return ResNet(3, option="A")


# ------------------------------------------------------------------ DenseNet (Huang et al., no bottleneck)


class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], 1)


class Transition(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.bn = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(self, depth=16, growth=12, num_classes=10, stem_bn=True, compression=1.0):
        super().__init__()
        n = (depth - 4) // 3
        channels = 2 * growth
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels) if stem_bn else None
        blocks = []
        for b in range(3):
            for _ in range(n):
                blocks.append(DenseLayer(channels, growth))
                channels += growth
            if b < 2:
                out = int(channels * compression)
                blocks.append(Transition(channels, out))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        if self.stem_bn is not None:
            out = F.relu(self.stem_bn(out))
        out = F.relu(self.bn(self.blocks(out)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def densenet16():
    return DenseNet(16, 12)


def densenet16_huang():
    """As Huang et al. write it: no BatchNorm after the first convolution, compression 0.5."""
    return DenseNet(16, 12, stem_bn=False, compression=0.5)


# ------------------------------------------------------------------ MLP and what does not fit


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                 nn.Linear(128, 10))

    def forward(self, x):
        return self.net(x)


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm1d(8)
        self.rnn = nn.LSTM(8, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.rnn(F.relu(self.bn(self.conv(x))))[0].mean(2))


class EvenKernel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 4, padding=2, bias=False)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.conv(x), 1).flatten(1))


NOT_A_MODULE = 3
